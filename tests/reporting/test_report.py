import json

import pytest

from gptlab.reporting.report import main, write_report
from tests.reporting.runs import fake_run

STUDY = {"name": "s", "baseline": "baseline", "differs": {}, "unfair": []}


def study_runs(root, finals: dict[str, list[float]], **kwargs):
    for name, values in finals.items():
        for i, final in enumerate(values):
            fake_run(root / name / f"seed{1337 + i}", name, 1337 + i, vals=(10.8, 8.0, final),
                     hellas=(0.25, 0.26, 0.30 if name == "baseline" else 0.31 + i / 100), status="complete",
                     study=STUDY, **kwargs)


def rows(text: str) -> dict[str, list[str]]:
    table = [line for line in text.splitlines() if line.startswith("| ")][1:]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table)}


def test_a_clear_win_is_marked_significant_and_noise_is_not(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31, 3.29], "rope": [3.10, 3.11, 3.09], "alibi": [3.31, 3.28, 3.30]})
    text = write_report([tmp_path], tmp_path, figures=False)
    table = rows(text)
    assert table["baseline"][2] == "3.3000 ± 0.0100"
    assert table["rope"][3] == "-0.2000 ± 0.0227"  # t(4) 2.776 x se 0.00816
    assert table["rope"][4] == "4.0" and table["rope"][6] == "0.000 **" and table["rope"][7] == "better **"
    assert table["alibi"][7].startswith("inconclusive: differences of ")
    assert table["rope"][1] == "1337, 1338, 1339" and table["rope"][10] == "1.00k" and table["rope"][13] == "512"
    saved = json.loads((tmp_path / "report.json").read_text())
    rope = next(r for r in saved[0]["rows"] if r["experiment"] == "rope")
    assert rope["val_vs_baseline"]["mark"] == "**" and len(rope["runs"]) == 3 and rope["verdict"] == "better **"
    assert (tmp_path / "report.csv").read_text().count("\n") == 4 and (tmp_path / "report.md").is_file()


def test_holm_decides_the_mark_and_the_raw_p_is_shown_beside_it(tmp_path):
    """Five variants against one baseline: alone, swiglu's p of about 0.02 would be `*`; corrected over
    the table's five comparisons it is not significant, and the row says so with both p-values."""
    finals = {"baseline": [7.140, 7.135, 7.145], "swiglu": [7.118, 7.122, 7.120]}
    finals.update({name: [7.139, 7.141, 7.142] for name in ("rope", "alibi", "gqa", "mla")})
    study_runs(tmp_path, finals)
    swiglu = rows(write_report([tmp_path], tmp_path, figures=False))["swiglu"]
    p, p_holm = float(swiglu[5]), float(swiglu[6])  # the smallest p of five: Holm multiplies it by 5
    assert p < 0.05 and p_holm == pytest.approx(5 * p, abs=0.003) and p_holm > 0.05
    assert swiglu[7].startswith("not significant after Holm's correction over 5 comparisons (raw p=")
    assert "over the table's 5 comparison(s)" in write_report([tmp_path], tmp_path, figures=False)


def test_two_seeds_a_side_give_the_seeds_a_claim_needs_and_no_mark_and_no_interval(tmp_path):
    """The verdict is withheld below three seeds, and so is the ± interval: a two-seed spread is not one to read."""
    study_runs(tmp_path, {"baseline": [3.30, 3.32], "rope": [3.10, 3.12]})
    text = write_report([tmp_path], tmp_path, figures=False)
    rope = rows(text)["rope"]
    assert rope[3] == "-0.2000" and rope[4:7] == ["-", "-", "-"] and "*" not in rope[7]
    # pooled std 0.01414 (df 2), one comparison: 0.2 is 14 standard deviations, so 3 seeds (the least) do
    assert rope[7] == ("not tested: 2 and 2 seeds (a mark needs 3 a side); a difference of 0.2000 needs 3 seeds "
                       "per arm")
    assert "rows with fewer than 3 seeds are not tested" in text


def test_the_resolution_and_the_seeds_a_difference_needs(tmp_path):
    """Pooled seed-to-seed std exactly 0.02 and one comparison (alpha 0.05): a difference of 0.01 is
    Cohen's d = 0.5, for which a two-sided two-sample t-test at 80% power needs 64 per group (G*Power)."""
    study_runs(tmp_path, {"baseline": [3.30, 3.32, 3.34], "rope": [3.10, 3.12, 3.14]})
    text = write_report([tmp_path], tmp_path, figures=False, detect=0.01)
    assert "seed-to-seed std 0.0200, pooled over 2 experiments (df 4)" in text
    assert "a val-loss difference of 0.01 needs 64 seeds per arm" in text and "the complete seeds it has: baseline 3, rope 3" in text
    # the minimum detectable effect at 3 seeds: Welch's test detects d = 3.51 four times in five (simulated in
    # test_stats; Student's t with 4 df would claim 3.07)
    assert "differences of 0.0701 or more would be detected" in text
    assert main([str(tmp_path), "--detect", "-1", "--no-figures"]) == 2


def test_rows_keep_the_study_order(tmp_path):
    study = {**STUDY, "experiments": ["baseline", "swiglu", "alibi", "rope"]}
    for name in study["experiments"]:
        fake_run(tmp_path / name / "seed1337", name, 1337, vals=(10.8, 8.0, 7.0), status="complete", study=study)
    text = write_report([tmp_path], tmp_path, figures=False)
    assert list(rows(text)) == ["baseline", "swiglu", "alibi", "rope"]
    assert "data fingerprint f00d" in text  # which hash the title gives, named


def test_a_model_that_differs_beyond_the_named_change_is_labelled_confounded(tmp_path):
    """Separate runs: rope trained with 3 layers against a baseline of 2. The row says so, and
    says the difference is not the experiment's alone; gqa's n_kv_head is its file's own change."""
    fake_run(tmp_path / "baseline" / "log", "baseline", vals=(10.8, 8.0, 7.0), status="complete",
             model={"n_layer": 2})
    fake_run(tmp_path / "rope" / "log", "rope", vals=(10.8, 8.0, 6.9), status="complete", model={"n_layer": 3})
    fake_run(tmp_path / "gqa" / "log", "gqa", vals=(10.8, 8.0, 6.9), status="complete",
             model={"n_layer": 2, "n_kv_head": 4}, header={"experiment_model_fields": {"n_kv_head": 4}})
    table = rows(write_report([tmp_path], tmp_path, figures=False))
    assert "rope (n_layer 3 vs 2: confounded)" in table
    assert "CONFOUNDED: differs from the baseline in n_layer 3 vs 2" in table["rope (n_layer 3 vs 2: confounded)"][-1]
    assert "gqa" in table and "CONFOUNDED" not in table["gqa"][-1]


def test_a_mixture_of_experts_shows_its_active_parameters(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31]})
    for i in range(2):
        fake_run(tmp_path / "moe" / f"seed{1337 + i}", "moe", 1337 + i, vals=(10.8, 8.0, 3.2), status="complete",
                 study=STUDY, header={"params": 3000, "params_active": 1500})
    table = rows(write_report([tmp_path], tmp_path, figures=False))
    assert table["moe"][10] == "3.00k (1.50k active)" and table["baseline"][10] == "1.00k"


def test_incomplete_runs_are_listed_never_averaged(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31], "rope": [3.10, 3.12]})
    fake_run(tmp_path / "rope" / "seed1339", "rope", 1339, vals=(10.8, 2.0), steps=30, status="stopped", study=STUDY)
    table = rows(write_report([tmp_path], tmp_path, figures=False))
    assert table["rope"][2] == "3.1100 ± 0.0141"  # the stopped run's 2.0 is not in it
    assert "seed 1339 stopped at step 30/50 (not averaged)" in table["rope"][-1]


def test_one_seed_gives_a_difference_and_no_test(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30], "rope": [3.20]})
    table = rows(write_report([tmp_path], tmp_path, figures=False))
    assert table["rope"][3] == "-0.1000" and table["rope"][7].startswith("one seed a side: no test")


def test_unfair_rows_say_so(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31]})
    for i in range(2):
        fake_run(tmp_path / "hot" / f"seed{1337 + i}", "hot", 1337 + i, vals=(10.8, 3.0 + i / 100), status="complete",
                 study={**STUDY, "unfair": ["max_lr"]}, max_steps=25)
    table = rows(write_report([tmp_path], tmp_path, figures=False))
    assert "UNFAIR: changes train.max_lr" in table["hot"][-1]


def test_a_study_run_on_other_data_says_so(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31], "rope": [3.10]})
    fake_run(tmp_path / "rope" / "seed1338", "rope", 1338, vals=(10.8, 8.0, 3.12), status="complete", study=STUDY,
             header={"data_fingerprint": "beef"})
    table = rows(write_report([tmp_path], tmp_path, figures=False))
    assert "UNFAIR: other data" in table["rope"][-1] and "UNFAIR" not in table["baseline"][-1]


def test_runs_of_different_setups_are_not_compared(tmp_path):
    fake_run(tmp_path / "a", "baseline", vals=(10.8, 8.0, 7.0), status="complete")
    fake_run(tmp_path / "b", "rope", vals=(10.8, 8.0, 7.0), status="complete", train={"max_lr": 1e-3})
    text = write_report([tmp_path], tmp_path, figures=False)
    assert text.count("### ") == 2


def test_the_baseline_card_applies_to_the_gpt2_recipe_only(tmp_path):
    fake_run(tmp_path / "gpt2", "baseline", vals=(10.9, 3.5, 3.28), hellas=(0.25, 0.28, 0.30), preset="gpt2",
             max_steps=19073, status="complete", steps=3, train={"eval_interval": 250})
    text = write_report([tmp_path / "gpt2"], tmp_path, figures=False)
    assert "OpenAI GPT-2 124M on the FineWeb-Edu val shard 3.2924; this baseline" in text
    assert "OpenAI GPT-2 124M in lm-eval-harness 0.3114" in text and "GPT-3 124M (paper) 0.337" in text
    study_runs(tmp_path / "smoke", {"baseline": [3.30]})
    assert "apply to the GPT-2 124M recipe only" in write_report([tmp_path / "smoke"], tmp_path, figures=False)


def test_the_figures_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    study_runs(tmp_path, {"baseline": [3.30, 3.31], "rope": [3.10, 3.12]})
    write_report([tmp_path], tmp_path)
    assert (tmp_path / "study_curves.png").stat().st_size > 10_000 and (tmp_path / "study_deltas.png").is_file()


def test_the_command_names_what_is_missing(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no runs (run.json or log.txt)" in capsys.readouterr().err


def test_a_directory_whose_record_and_log_are_not_a_runs_is_named(tmp_path, capsys):
    (tmp_path / "gr").mkdir()
    (tmp_path / "gr" / "run.json").write_text("{garbage")
    assert main([str(tmp_path / "gr")]) == 2
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'gr'}: its run.json and log.txt are not a run's" in err
    assert "1 directory holds a run.json or log.txt that is not a run's" in err


def test_detect_says_why_there_is_no_spread_to_plan_with(tmp_path):
    study_runs(tmp_path, {"rope": [3.10, 3.12, 3.11]})
    text = write_report([tmp_path / "rope"], tmp_path / "out", figures=False, detect=0.01)
    assert "one experiment (rope) and nothing to compare it with" in text and "one seed a side" not in text


def test_runs_outside_a_study_are_titled_by_their_own_directory(tmp_path):
    fake_run(tmp_path / "runs" / "one", "rope", 1337, vals=(10.8, 8.0, 3.1), status="complete")
    text = write_report([tmp_path / "runs" / "one"], tmp_path / "out", figures=False)
    assert text.splitlines()[0].endswith(f"({tmp_path / 'runs' / 'one'})")  # not its parent's parent


def test_records_that_are_not_records_are_read_from_the_log_without_a_traceback(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31], "rope": [3.10, 3.12]})
    for text in ("[]", '"x"', '{"experiment": 5}', "{broken"):
        (tmp_path / "rope" / "seed1338" / "run.json").write_text(text)
        text_out = write_report([tmp_path], tmp_path, figures=False)
        assert "rope" in text_out  # the run still counts, from its log.txt


@pytest.mark.parametrize("damage", ["", "{\"experiment\": \"rope\", \"val_", "[]", "null"])
def test_a_damaged_record_keeps_its_seed_in_the_study_and_says_so(tmp_path, capsys, damage):
    study_runs(tmp_path, {"baseline": [3.30, 3.31, 3.29], "rope": [3.10, 3.12, 3.11]})
    (tmp_path / "rope" / "seed1338" / "run.json").write_text(damage)
    text = write_report([tmp_path], tmp_path, figures=False)
    assert text.count("### ") == 1  # one table: the seed did not leave its study
    rope = rows(text)["rope"]
    assert rope[1] == "1337, 1338, 1339" and rope[2] == "3.1100 ± 0.0100"
    assert "seed 1338: " in rope[-1] and "run.json is not a run record" in rope[-1]
    assert "rope/seed1338/run.json is not a run record" in capsys.readouterr().err


@pytest.mark.parametrize("key, value", [("val_loss", float("nan")), ("val_loss", 2.5), ("model_config", "garbage"),
                                        ("training_config", []), ("study", 7)])
def test_a_record_the_log_contradicts_is_corrected_from_the_log(tmp_path, capsys, key, value):
    """A val loss edited by hand (or NaN), a config that is not one: the log's value counts, named."""
    study_runs(tmp_path, {"baseline": [3.30, 3.31, 3.29], "rope": [3.10, 3.12, 3.11]})
    path = tmp_path / "rope" / "seed1338" / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    text = write_report([tmp_path], tmp_path, figures=False)
    rope = rows(text)["rope"]
    assert text.count("### ") == 1 and rope[2] == "3.1100 ± 0.0100"
    assert f"{key} is " in capsys.readouterr().err and "log.txt" in rope[-1]


def test_lengths_measured_for_some_seeds_are_not_a_row_mean(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31], "rope": [3.10, 3.12]})
    for seed, losses in ((1337, {"1": 3.1}), (1338, {"1": 3.1, "2": 3.2, "4": 3.3, "8": 3.4})):
        path = tmp_path / "rope" / f"seed{seed}" / "run.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "lengths": {"step": 50, "losses": losses}}))
    assert rows(write_report([tmp_path], tmp_path, figures=False))["rope"][-2] == " / ".join(
        ["n/a (1 of 2 seeds measured)"] * 3)


def test_a_copy_of_a_seed_is_not_a_second_sample(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30, 3.31], "rope": [3.10, 3.12]})
    import shutil
    shutil.copytree(tmp_path / "rope" / "seed1338", tmp_path / "rope" / "copy")
    table = rows(write_report([tmp_path], tmp_path, figures=False))
    assert table["rope"][1] == "1337, 1338" and "a repeat of seed 1338" in table["rope"][-1]


def test_lengths_measured_at_an_earlier_step_are_called_stale(tmp_path):
    study_runs(tmp_path, {"baseline": [3.30], "rope": [3.10]})
    path = tmp_path / "rope" / "seed1337" / "run.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "lengths": {"step": 25, "losses": {"1": 3.1, "2": 3.2}}}))
    assert "stale (measured at step 25" in rows(write_report([tmp_path], tmp_path, figures=False))["rope"][-2]
    path.write_text(json.dumps({**record, "lengths": {"step": 50, "losses": {"1": 3.1, "2": 3.2, "4": 3.3, "8": 3.4}}}))
    assert rows(write_report([tmp_path], tmp_path, figures=False))["rope"][-2] == "3.200 / 3.300 / 3.400"


def test_an_unknown_baseline_is_refused(tmp_path, capsys):
    study_runs(tmp_path, {"baseline": [3.30]})
    assert main([str(tmp_path), "--baseline", "ropee", "--no-figures"]) == 2
    assert "--baseline ropee: no run of that experiment" in capsys.readouterr().err


def test_the_tuned_table_leaves_out_the_sweep_run_its_rate_was_picked_by(tmp_path):
    """The sweep's run at the chosen rate was picked for its low loss: a tuned mean that counted it
    would lean toward its luckiest seed. Here rope's sweep run at x2 is far below its other seeds."""
    sweep = {0.5: 3.40, 1.0: 3.30, 2.0: 3.00}
    for name in ("baseline", "rope"):
        for m, val in sweep.items():
            run = f"{name}/seed1337" if m == 1.0 else f"{name}/lr{m:g}/seed1337"
            fake_run(tmp_path / run, name, 1337, vals=(10.8, 8.0, val + (0.1 if name == "baseline" else 0.0)),
                     status="complete", train={"max_lr": 6e-4 * m},
                     study={**STUDY, "lr_sweep": [0.5, 1.0, 2.0], "lr_multiplier": m, "first_seed": 1337, "run": run})
        for seed in (1338, 1339, 1340):
            run = f"{name}/lr2/seed{seed}"
            fake_run(tmp_path / run, name, seed, vals=(10.8, 8.0, 3.20 + (seed - 1338) / 100), status="complete",
                     train={"max_lr": 1.2e-3},
                     study={**STUDY, "lr_sweep": [0.5, 1.0, 2.0], "lr_multiplier": 2.0, "first_seed": 1337, "run": run})
    write_report([tmp_path], tmp_path, figures=False)
    report = json.loads((tmp_path / "report.json").read_text())
    tuned = next(t for t in report if t["kind"] == "tuned")
    rope = next(r for r in tuned["rows"] if r["experiment"] == "rope")
    assert sorted(run["seed"] for run in rope["runs"]) == [1338, 1339, 1340]
    assert rope["val_loss"][0] == pytest.approx(3.21)  # the sweep's 3.00 would have made it 3.1575


def test_a_throughput_measured_on_a_busy_machine_is_marked_and_said(tmp_path):
    """tok/s of runs that shared two CPUs with other work (load average 4.1) measure the contention, not the
    architecture: the cell is marked and the legend says why; a quiet machine's are not."""
    busy = {"environment": {"device": "cpu", "git_commit": "abc", "cpu": "AMD EPYC", "cpus": 2}}
    study_runs(tmp_path / "busy", {"baseline": [3.30, 3.32, 3.31], "rope": [3.10, 3.12, 3.11]}, header=busy,
               extra_lines=["25 load 4.1", "50 load 4.3"])
    text = write_report([tmp_path / "busy"], tmp_path / "busy", figures=False)
    assert rows(text)["rope"][14].endswith(" †")
    assert "† tok/s measured while the machine was busy with other work (load average up to 4.2 on 2 CPUs" in text
    study_runs(tmp_path / "quiet", {"baseline": [3.30, 3.32, 3.31], "rope": [3.10, 3.12, 3.11]}, header=busy,
               extra_lines=["25 load 2.1", "50 load 2.2"])
    text = write_report([tmp_path / "quiet"], tmp_path / "quiet", figures=False)
    assert "†" not in text


def test_a_toy_study_says_what_it_can_show_and_what_an_answer_costs(tmp_path):
    """A 50-step study of a small model checks the pipeline; the header says so, with the GPT-2 124M recipe's
    cost: 6 (matmul weights + LM head) + 12 n_layer n_embd T FLOPs a token (Kaplan/PaLM's count) x 19,073 x
    524,288 tokens, at 40% of an H100's 989 TFLOP/s."""
    study_runs(tmp_path, {"baseline": [7.12, 7.13, 7.11], "rope": [7.10, 7.09, 7.11]})
    text = write_report([tmp_path], tmp_path, figures=False)
    per_token = 6 * (12 * 12 * 768 ** 2 + 50304 * 768) + 12 * 12 * 768 * 1024
    hours = per_token * 19073 * 524288 / (0.4 * 989e12) / 3600
    assert "At this size a study checks the pipeline and its statistics" in text
    assert f"{hours:.1f} GPU hours a run at 40% MFU on an H100" in text
    assert "(40% of them embeddings)" in text  # the fake runs' 1000 parameters, 600 of them not embeddings


def test_detect_names_each_rows_seeds_not_the_fewest_of_any_row(tmp_path):
    """"it has 2" took the fewest seeds of any row, an untested one included."""
    study_runs(tmp_path, {"baseline": [3.30, 3.32, 3.34, 3.31], "rope": [3.10, 3.12, 3.14, 3.11], "alibi": [3.2, 3.21]})
    text = write_report([tmp_path], tmp_path, figures=False, detect=0.01)
    assert "the complete seeds it has: baseline 4, alibi 2, rope 4" in text


def test_no_spread_is_no_test(tmp_path):
    """Identical runs on both sides gave df inf, "p 0.000, better **", and a resolution of 0.0000."""
    study_runs(tmp_path, {"baseline": [3.30, 3.30, 3.30], "rope": [3.20, 3.20, 3.20]})
    text = write_report([tmp_path], tmp_path, figures=False)
    rope = rows(text)["rope"]
    assert rope[4:7] == ["-", "-", "-"] and rope[7].startswith("no test: every seed gave the same loss on both sides")
    assert "Resolution (val loss)" not in text and "0.0000 or more" not in text


def test_a_run_trained_with_other_settings_in_a_studys_directory_is_not_compared(tmp_path):
    """Fairness was checked only when a study planned its runs: a run of another max_lr, preset or max_steps placed
    in the study's directory was reported "better **"."""
    study_runs(tmp_path, {"baseline": [3.30, 3.32, 3.31]})
    for i, final in enumerate([3.10, 3.12, 3.11]):
        fake_run(tmp_path / "rope" / f"seed{1337 + i}", "rope", 1337 + i, vals=(10.8, 8.0, final),
                 status="complete", study=STUDY, train={"max_lr": 1.8e-3})
    text = write_report([tmp_path], tmp_path, figures=False)
    rope = rows(text)["rope"]
    assert rope[7].startswith("not compared: trained with other settings than the baseline (train.max_lr 0.0018 vs")
    assert rope[4:7] == ["-", "-", "-"] and "*" not in rope[7]
    # allowed by the study (--allow-unfair): compared, and marked
    allowed = {**STUDY, "unfair": ["max_lr"]}
    for i, final in enumerate([3.10, 3.12, 3.11]):
        fake_run(tmp_path / "b" / "rope" / f"seed{1337 + i}", "rope", 1337 + i, vals=(10.8, 8.0, final),
                 status="complete", study=allowed, train={"max_lr": 1.8e-3})
    for i, final in enumerate([3.30, 3.32, 3.31]):
        fake_run(tmp_path / "b" / "baseline" / f"seed{1337 + i}", "baseline", 1337 + i, vals=(10.8, 8.0, final),
                 status="complete", study=STUDY)
    rope = rows(write_report([tmp_path / "b"], tmp_path / "b", figures=False))["rope"]
    assert rope[7] == "better **" and "UNFAIR" in rope[-1]


def test_a_run_with_a_record_and_no_log_is_reported_without_failing(tmp_path, capsys):
    study_runs(tmp_path, {"baseline": [3.30, 3.32, 3.31], "rope": [3.10, 3.12, 3.11]})
    (tmp_path / "rope" / "seed1338" / "log.txt").unlink()
    assert main([str(tmp_path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "study_curves.png").is_file()


def sweep_study(root, names=("baseline", "rope", "mla"), skip=(), tuned_seeds=(1338, 1339, 1340)):
    """Fake runs of a sweep study over x0.5, x1, x2 (the first seed) whose optimum is x2 for every experiment,
    then its seeds at x1 (the shared table) and at x2 (the tuned one); `skip`: (name, multiplier) never trained."""
    grid, study = [0.5, 1.0, 2.0], {**STUDY, "experiments": list(names), "lr_sweep": [0.5, 1.0, 2.0], "first_seed": 1337}
    for k, name in enumerate(names):
        for m, val in {0.5: 3.40, 1.0: 3.30, 2.0: 3.25}.items():
            if (name, m) in skip:
                continue
            run = f"{name}/seed1337" if m == 1.0 else f"{name}/lr{m:g}/seed1337"
            fake_run(root / run, name, 1337, vals=(10.8, 8.0, val - 0.05 * k), status="complete",
                     train={"max_lr": 6e-4 * m}, study={**study, "lr_multiplier": m, "run": run})
        for seed in (1338, 1339, 1340):
            run = f"{name}/seed{seed}"
            fake_run(root / run, name, seed, vals=(10.8, 8.0, 3.30 - 0.05 * k + (seed - 1338) / 200), status="complete",
                     study={**study, "lr_multiplier": 1.0, "run": run})
        for seed in tuned_seeds:
            run = f"{name}/lr2/seed{seed}"
            fake_run(root / run, name, seed, vals=(10.8, 8.0, 3.20 - 0.05 * k + (seed - 1338) / 200),
                     status="complete", train={"max_lr": 1.2e-3}, study={**study, "lr_multiplier": 2.0, "run": run})
    return grid


def test_a_missing_baseline_sweep_point_leaves_no_tuned_table_rather_than_another_baseline(tmp_path):
    """The baseline's sweep missing x2 made the next experiment the tuned table's baseline ("v1 (baseline) at x2")."""
    sweep_study(tmp_path, skip={("baseline", 2.0)})
    text = write_report([tmp_path], tmp_path, figures=False)
    tables = json.loads((tmp_path / "report.json").read_text())
    assert [t["kind"] for t in tables] == ["shared"] and "(baseline) at x" not in text
    assert "No table at each experiment's tuned rate yet: the baseline (baseline) its sweep is missing x2" in text


def test_an_experiment_whose_sweep_is_incomplete_is_left_out_of_the_tuned_table_and_said(tmp_path):
    """mla's sweep missing x0.5 put it in the tuned table "at x1", from its shared-rate seeds."""
    sweep_study(tmp_path, skip={("mla", 0.5)})
    text = write_report([tmp_path], tmp_path, figures=False)
    tuned = next(t for t in json.loads((tmp_path / "report.json").read_text()) if t["kind"] == "tuned")
    assert [r["experiment"] for r in tuned["rows"]] == ["baseline", "rope"]
    assert "mla is not in this table: its sweep is missing x0.5" in text


def test_a_complete_sweep_whose_tuned_seeds_have_not_trained_is_shown(tmp_path):
    pytest.importorskip("matplotlib")
    sweep_study(tmp_path, tuned_seeds=())
    text = write_report([tmp_path], tmp_path)
    assert "Learning-rate sweep (the first seed" in text and (tmp_path / "study_lr.png").is_file()
    assert "the seeds at each experiment's tuned rate have not trained yet" in text


def test_the_shared_and_tuned_tables_are_corrected_together(tmp_path):
    """Reading both tables is testing both: Holm's correction runs over both tables' comparisons."""
    sweep_study(tmp_path)
    text = write_report([tmp_path], tmp_path, figures=False)
    tables = json.loads((tmp_path / "report.json").read_text())
    assert "over the study's 4 comparison(s) with the baseline, in both its tables" in text
    for table in tables:
        for row in table["rows"][1:]:
            assert row["val_vs_baseline"]["family"] == 4
    raw = sorted(row["val_vs_baseline"]["p"] for t in tables for row in t["rows"][1:])
    adjusted = sorted(row["val_vs_baseline"]["p_adjusted"] for t in tables for row in t["rows"][1:])
    assert adjusted[0] == pytest.approx(min(1.0, 4 * raw[0]))  # the smallest p times the whole family
