import json

import pytest
import torch

from gptlab import load_experiment
from gptlab.bench import cli, peak, steps
from gptlab.bench.reference import PlainGPT2
from gptlab.core.config import replace_config
from gptlab.models.gpt import build_gpt

SHAPE = dict(n_layer=3, n_head=4, n_embd=64, vocab_size=512)


def gptlab_baseline(seq_len: int = 32):
    exp = load_experiment("baseline")
    return build_gpt(exp, replace_config(exp.model_config, block_size=seq_len, **SHAPE))


def test_the_reference_is_gpt2_the_baseline_computes_the_same_loss():
    """The plain GPT-2, given the baseline's weights under its own names, gives the same loss:
    the two rows of the benchmark compare the same arithmetic, written twice."""
    torch.manual_seed(0)
    ours, reference = gptlab_baseline(), PlainGPT2(block_size=32, **SHAPE)
    weights = {}
    for name, tensor in ours.state_dict().items():
        weights[name.replace("transformer.h.", "layers.").replace("transformer.", "")] = tensor
    reference.load_state_dict(weights)
    x, y = torch.randint(0, 512, (2, 32)), torch.randint(0, 512, (2, 32))
    torch.testing.assert_close(reference(x, y), ours(x, y).loss)
    assert sum(p.numel() for p in reference.parameters()) == ours.num_params()


@pytest.mark.parametrize("seq_len", [32, 1024])
def test_the_flops_formula_of_the_records_equals_nanogpts_closed_formula(seq_len):
    ours, reference = gptlab_baseline(seq_len), PlainGPT2(block_size=seq_len, **SHAPE)
    assert ours.flops_per_token(seq_len) == reference.flops_per_token(seq_len)

def test_the_matmul_peak_is_measured():
    result = peak.matmul_peak(torch.device("cpu"), torch.float32, n=256, seconds=0.05)
    assert result["n"] == 256 and result["dtype"] == "float32" and 1e8 < result["flops"] < 1e14
    assert peak.data_sheet_peak(torch.device("cpu"), torch.float32) is None


def test_models_are_interleaved_in_a_rotating_order(monkeypatch):
    calls = []
    monkeypatch.setattr(steps, "train_step", lambda c, device, autocast: (calls.append(c.name), (1.0, 0.1))[1])
    contenders = [steps.Contender(name, torch.nn.Linear(1, 1), None, 1) for name in "abc"]
    contenders[1].error = "out of memory"
    steps.run_interleaved(contenders, torch.device("cpu"), None, 4)
    assert calls == ["a", "c", "c", "a", "a", "c", "c", "a"]
    assert [len(c.step_seconds) for c in contenders] == [4, 0, 4]


@pytest.mark.long  # the default tier's budget: one of its slowest
def test_bench_prints_and_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--experiments", "baseline", "mla", "gqa", "--sizes", "cpu-blocks", "--batch", "2", "--seq-len", "24",
            "--steps", "2", "--new-tokens", "3", "--fixed-cost", "no", "--json", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "| plain GPT-2 |" in printed and "| mla |" in printed and "cached tok/s" in printed
    assert "gqa: n_kv_head=4" not in printed  # 4 divides 8 heads
    size = json.loads(out.read_text())["sizes"][0]
    assert size["tokens_per_step"] == 48 and size["matmul_peak"]["flops"] > 0
    rows = {r["name"]: r for r in size["rows"]}
    assert list(rows) == ["plain GPT-2", "baseline", "mla", "gqa"]
    for r in rows.values():
        assert r["steps"] == 2 and r["flops_per_second"] == pytest.approx(r["flops_per_token"] * r["tokens_per_second"])
        assert r["tokens_per_second"] == max(r["tokens_per_second_halves"]) >= r["tokens_per_second_median"]
        assert r["mfu_measured_peak"] == pytest.approx(r["flops_per_second"] / size["matmul_peak"]["flops"])
        assert 0 <= r["data_wait_share"] < 1 and r["peak_memory_bytes"] is None  # no CPU allocator statistics
    assert "generation" not in rows["plain GPT-2"]
    # MLA's cache: kv_lora_rank + qk_rope_head_dim per layer, against MHA's 2 * n_embd; GQA's 2 * n_kv_head * head_dim
    mla = load_experiment("mla").model_config
    d_c, _, d_r, _ = replace_config(mla, n_embd=512, n_head=8).mla_dims()
    kv = {name: rows[name]["generation"]["kv_bytes_per_token"] for name in ("baseline", "mla", "gqa")}
    assert kv["baseline"] == 4 * 2 * 512 * 4 and kv["mla"] == 4 * (d_c + d_r) * 4 and kv["gqa"] == 4 * 2 * 4 * 64 * 4
    assert cli.main(args) == 2 and "exists" in capsys.readouterr().err  # never written over
    assert cli.main(["--experiments", "basline", "--json", str(tmp_path / "x.json")]) == 2
    assert "basline" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_each_figure_is_the_fastest_step_and_each_ratio_comes_with_its_two_halves():
    """Steps of 1, 2, 4, 8 s (rounds 0-3) for 100 tokens: the fastest is 100 tok/s; the even rounds' fastest 100,
    the odd rounds' 50. Against a baseline of 2 s a step throughout (50 tok/s): 2.00x, and 1.00x-2.00x from the
    halves."""
    row = steps.Contender("v", torch.nn.Linear(1, 1), None, 10, step_seconds=[1.0, 2.0, 4.0, 8.0],
                          data_seconds=[0.0] * 4).result(100, {"flops": 1e9}, None)
    base = steps.Contender("baseline", torch.nn.Linear(1, 1), None, 5, step_seconds=[2.0] * 4,
                           data_seconds=[0.0] * 4).result(100, {"flops": 1e9}, None)
    assert row["tokens_per_second"] == 100 and row["tokens_per_second_halves"] == [100, 50]
    assert row["tokens_per_second_median"] == pytest.approx(37.5)  # of 100, 50, 25, 12.5
    assert cli.ratio_with_halves(row, base) == "2.00x (1.00-2.00)"
    assert cli.ratio_with_halves(row, base, per_token=True) == "4.00x (2.00-4.00)"  # twice the FLOPs a token


@pytest.mark.long  # three fresh processes, about 25 s
def test_the_fixed_cost_of_a_fresh_run_is_measured_from_its_process_start(tmp_path, capsys):
    """A fresh 1-step smoke run logs its age at its first step; the bench times the whole process around it."""
    out = tmp_path / "bench.json"
    assert cli.main(["--fixed-cost", "only", "--device", "cpu", "--json", str(out)]) == 0
    cost = json.loads(out.read_text())["fixed_cost"]
    assert cost["repeats"] == 3 and len(cost["runs"]) == 3
    for run in cost["runs"]:
        assert 0.3 < run["first_step"] < run["total"]  # Python and torch's import alone take longer than 0.3 s
    assert cost["first_step"]["fastest"] == min(r["first_step"] for r in cost["runs"])
    printed = capsys.readouterr().out
    assert "process start to the first training step:" in printed and "fastest of 3 fresh processes" in printed
