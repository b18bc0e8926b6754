import subprocess
import sys

import pytest

from gptlab.paths import REPO_ROOT
from gptlab.reporting.plots import figure, label_of, main, plot
from gptlab.training.logger import read_log

LOG = """# experiment {"name": "x"}
0 val 10.9
0 hella skipped
0 train 10.95
0 sample 'Hello, world'
1 train 9.5
2 train 9.0
2 val 9.1
2 hella 0.2500
1 train 9.4
"""


def test_read_log_takes_numeric_records_and_the_last_value_of_a_repeated_step(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text(LOG)
    series = read_log(path)
    assert series["train"] == [(0, 10.95), (1, 9.4), (2, 9.0)]  # step 1 repeated after a resume
    assert series["val"] == [(0, 10.9), (2, 9.1)] and series["hella"] == [(2, 0.25)]


def test_a_resumed_attempt_replaces_what_the_attempts_before_it_logged_after_its_step(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("# run started\n0 train 10.0\n0 startup 2.5\n1 train 9.0\n2 val 8.5\n2 train 8.0\n"
                    "3 train 7.0\n4 val 6.5\n"  # then a crash before step 4's checkpoint
                    "# run resumed from log/model_00002.pt at step 2\n2 train 8.25\n2 startup 3.0\n")
    series = read_log(path)
    assert series["train"] == [(0, 10.0), (1, 9.0), (2, 8.25)]  # step 3 was the abandoned attempt's
    assert series["val"] == [(2, 8.5)]  # logged before step 2's checkpoint; step 4's is gone
    assert series["startup"] == [(0, 2.5), (2, 3.0)]


@pytest.mark.slow
def test_plot_overlays_several_logs(tmp_path):
    pytest.importorskip("matplotlib")
    for name in ("baseline", "rope"):
        (tmp_path / name / "log").mkdir(parents=True)
        (tmp_path / name / "log" / "log.txt").write_text(LOG)
    out = tmp_path / "curves.png"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "plot_training_log.py"),
                             str(tmp_path / "baseline/log/log.txt"), str(tmp_path / "rope/log/log.txt"),
                             str(out), "0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert label_of(tmp_path / "rope/log/log.txt") == "rope"
    missing = subprocess.run([sys.executable, str(REPO_ROOT / "plot_training_log.py"), str(tmp_path / "no.txt"),
                              str(out)], capture_output=True, text=True)
    assert missing.returncode == 2 and "no log file" in missing.stderr


@pytest.mark.slow
def test_a_start_past_every_log_draws_from_zero_and_says_so(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "log.txt").write_text(LOG)
    result = subprocess.run([sys.executable, str(REPO_ROOT / "plot_training_log.py"), str(tmp_path / "log.txt"),
                             str(tmp_path / "c.png"), "1000"], capture_output=True, text=True)
    assert result.returncode == 0 and "START 1000 is past the last step (2) of every log: drawing from step 0" in result.stdout


def test_an_empty_hellaswag_panel_is_explained(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "log.txt").write_text("".join(line + "\n" for line in LOG.splitlines() if "hella" not in line))
    notes = plot([tmp_path / "log.txt"], tmp_path / "c.png", 0)
    assert notes == ["no HellaSwag results in these logs (skipped: offline, or train.hellaswag=false)"]


def test_an_empty_hellaswag_panel_draws_no_reference_line(tmp_path):
    """GPT-2's 0.2955 alone on an empty panel would read as a result of these runs."""
    plt = pytest.importorskip("matplotlib.pyplot")
    (tmp_path / "log.txt").write_text("".join(line + "\n" for line in LOG.splitlines() if "hella" not in line))
    fig, _ = figure([tmp_path / "log.txt"], 0)
    assert list(fig.axes[1].lines) == []
    plt.close(fig)
    (tmp_path / "log.txt").write_text(LOG)
    fig, _ = figure([tmp_path / "log.txt"], 0)
    assert [line.get_label() for line in fig.axes[1].lines][-1] == "GPT-2 124M (OpenAI)"
    plt.close(fig)


@pytest.mark.parametrize("args, phrase", [
    (["log.txt", "missing/dir/c.png"], "the directory of missing/dir/c.png does not exist"),
    (["log.txt", "c.png", "-5"], "START -5 is negative"),
])
def test_plot_mistakes_are_one_error(tmp_path, monkeypatch, capsys, args, phrase):
    (tmp_path / "log.txt").write_text(LOG)
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and phrase in err


def test_a_directory_stands_for_every_log_under_it(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for name in ("baseline/seed1337", "baseline/seed1338", "rope/seed1337"):
        (tmp_path / "study" / name).mkdir(parents=True)
        (tmp_path / "study" / name / "log.txt").write_text(LOG)
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "study"), str(tmp_path / "out.png"), "0"]) == 0
    assert (tmp_path / "out.png").is_file()
    assert label_of(tmp_path / "study/rope/seed1337/log.txt") == "rope/seed1337"
    assert main([str(tmp_path / "empty"), str(tmp_path / "out.png")]) == 2
    assert str(tmp_path / "empty") + " holds no log.txt" in capsys.readouterr().err
