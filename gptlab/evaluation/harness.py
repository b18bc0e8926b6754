"""lm-evaluation-harness (EleutherAI) adapter: `--model gptlab` scores a checkpoint in place.

    pip install -e ".[eval]"
    python -m gptlab.evaluation.harness --model gptlab --model_args checkpoint=log_train/baseline/log \\
        --tasks hellaswag,arc_easy --batch_size 16

The command is lm-eval's own (`lm_eval --help` lists its options), with `gptlab` known to its
model registry. A plain `lm_eval --model gptlab ...` works with lm-eval releases that load the
models installed packages name as `lm_eval.models` entry points (gptlab's pyproject.toml names
this class); lm-eval 0.4.13 reads none, so `python -m gptlab.evaluation.harness` registers the
model and then runs lm-eval's command line. From Python, importing this module registers it.

model_args: `checkpoint` (a model_NNNNN.pt, or a run's log directory: its newest intact
checkpoint), `device` (default: the best available), `dtype` (`auto`: bfloat16 autocast on
CUDA as in training, float32 elsewhere; `float32`; `bfloat16`), `batch_size`, `max_length`
(default block_size) and `max_gen_toks` (default 256, as lm-eval's HF model).

Scoring follows lm-eval's HF model (`lm_eval.models.huggingface.HFLM`) so numbers compare
with published ones: a context and continuation longer than max_length lose tokens from the
left; `loglikelihood_rolling` scores a text in windows of max_length, its first token
conditioned on <|endoftext|>; only GPT-2's 50,257 real tokens are ever scored or generated,
never the rows that pad the vocabulary to 50,304. Requests are sorted longest first, batched
and right-padded (padding after a causal model's tokens cannot change their logits), and
answered in their original order. Generation batches only prompts of the same length: the
model takes no attention mask, so a left-padded prompt would attend to its padding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys

import torch
import torch.nn.functional as F

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import model_registry
    from lm_eval.models.utils import normalize_gen_kwargs
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] != "lm_eval":
        raise
    raise ModuleNotFoundError('gptlab.evaluation.harness needs lm-evaluation-harness: pip install -e ".[eval]" '
                              '(or pip install lm-eval)', name="lm_eval") from None
from tqdm import tqdm

from gptlab.core.config import GPT2_VOCAB
from gptlab.data.tokenizer import EOT, gpt2_encoding
from gptlab.models.gpt import sample_next
from gptlab.network import HUB, offline_environment, reachable, said_offline
from gptlab.training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, model_from_state
from gptlab.training.distributed import DeviceError, check_device, default_device

NAME = "gptlab"  # the name lm-eval's --model takes
DTYPES = ("auto", "float32", "bfloat16")
MODEL_ARGS = ("checkpoint", "device", "dtype", "batch_size", "max_length", "max_gen_toks")
GEN_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_k"}  # after normalize_gen_kwargs
log = logging.getLogger("lm_eval.models.gptlab")  # a child of lm-eval's logger: its handler and --verbosity apply

Request = tuple[tuple[str, str] | None, list[int], list[int]]  # (its strings, for the cache; context, continuation)


class HarnessError(ValueError):
    """The adapter cannot run as asked; the message says why and what to do."""


class GptlabLM(TemplateLM):
    """A gptlab checkpoint as an lm-eval language model. TemplateLM tokenises the
    (context, continuation) pairs as HF's model does (trailing spaces of a context move to its
    continuation, an empty context becomes <|endoftext|>); this class scores the tokens."""

    def __init__(self, checkpoint: str | None = None, device: str | None = None, dtype: str = "auto",
                 batch_size: int | str = 1, max_length: int | None = None, max_gen_toks: int = 256, **unknown):
        super().__init__()
        problems = [f"{name}={value!r} is not a model_arg of --model {NAME}" for name, value in unknown.items()]
        if checkpoint is None:
            problems.append("checkpoint is missing")
        if dtype not in DTYPES:
            problems.append(f"dtype={dtype!r} must be one of {', '.join(DTYPES)}")
        batch_size = _positive_int("batch_size", batch_size, problems)
        max_gen_toks = _positive_int("max_gen_toks", max_gen_toks, problems)
        max_length = None if max_length is None else _positive_int("max_length", max_length, problems)
        if problems:
            raise HarnessError(f"--model {NAME}: " + "; ".join(problems) + f". Its model_args: "
                               f"{', '.join(MODEL_ARGS)}, e.g. --model_args checkpoint=log_train/baseline/log")
        if device == "cuda:0" and not torch.cuda.is_available():  # lm-eval's default when --device is not given
            device = None  # as its HF model does: the best device there is
        device = device or default_device()
        check_device(device)
        self.checkpoint = find_checkpoint(checkpoint)
        state = load_checkpoint(self.checkpoint)
        self.model = model_from_state(state).to(device).eval()
        self.step, self.experiment = state.get("step"), state["experiment"]["name"]
        config = self.model.config
        self.max_length = max_length or config.block_size
        problem = self.model.transformer.wpe.length_problem(config, self.max_length)
        if problem:
            raise HarnessError(f"--model {NAME}: max_length={self.max_length}: {problem}")
        self._device = torch.device(device)
        self.batch_size, self.max_gen_toks, self.dtype = batch_size, max_gen_toks, dtype
        self.vocab = min(GPT2_VOCAB, config.vocab_size)  # real tokens only: the rest pad the matrix to 50,304 rows
        self.encoding = gpt2_encoding()
        log.info("--model %s: %s (experiment %s, step %s) on %s", NAME, self.checkpoint, self.experiment, self.step,
                 device)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> GptlabLM:
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> GptlabLM:
        """model_args, then lm-eval's --device and --batch_size for those they do not name: lm-eval
        always passes a device (cuda:0 by default), which would otherwise clash with model_args'."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    # what TemplateLM needs

    @property
    def eot_token_id(self) -> int:
        return EOT

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """GPT-2 BPE as gptlab's data: text is text (an "<|endoftext|>" in it is not the EOT token)."""
        return self.encoding.encode_ordinary(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.encoding.decode(tokens)

    def get_model_info(self) -> dict:
        """What lm-eval records beside the scores in its results JSON."""
        return {"checkpoint": str(self.checkpoint), "experiment": self.experiment, "step": self.step,
                "model_num_parameters": self.model.num_params(), "dtype": self.dtype, "max_length": self.max_length,
                "model_device": str(self._device)}  # lm-eval's own "device" is what its --device said

    def autocast(self):
        if self.dtype == "bfloat16" or (self.dtype == "auto" and self._device.type == "cuda"):
            return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # loglikelihood

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether each of its tokens is the argmax)
        of every (strings, context tokens, continuation tokens), longest first in batches."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc=f"{NAME} loglikelihood") as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                for i, result in zip(batch, self._score([requests[i][1:] for i in batch])):
                    results[i] = result
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], result)
                bar.update(len(batch))
        return results

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """One forward pass over the right-padded rows; logits only where a continuation token
        is predicted (the LM head over the vocabulary is most of a small model's cost)."""
        inputs, targets = [], []
        for context, continuation in pairs:
            if len(continuation) > self.max_length:
                raise HarnessError(f"a continuation of {len(continuation)} tokens does not fit in max_length="
                                   f"{self.max_length}; raise max_length (where the position encoding allows it)")
            context = context or [EOT]  # a context of spaces only, moved to the continuation: as an empty one
            tokens = (context + continuation)[-(self.max_length + 1):]  # too long: cut from the left, as HF's model
            inputs.append(tokens[:-1])
            targets.append(continuation)
        width = max(map(len, inputs))
        idx = torch.zeros(len(inputs), width, dtype=torch.long)
        for row, tokens in enumerate(inputs):
            idx[row, :len(tokens)] = torch.tensor(tokens)
        rows = torch.cat([torch.full((len(t),), row) for row, t in enumerate(targets)])
        cols = torch.cat([torch.arange(len(i) - len(t), len(i)) for i, t in zip(inputs, targets)])
        with self.autocast():
            hidden, _ = self.model.features(idx.to(self._device))
            logits = self.model.lm_head(hidden[rows.to(self._device), cols.to(self._device)])
        logprobs = F.log_softmax(logits[:, :self.vocab].float(), dim=-1)
        wanted = torch.tensor([token for t in targets for token in t], device=self._device)
        picked = logprobs.gather(1, wanted[:, None]).squeeze(1).split([len(t) for t in targets])
        greedy = (logprobs.argmax(dim=-1) == wanted).split([len(t) for t in targets])
        return [(float(p.sum()), bool(g.all())) for p, g in zip(picked, greedy)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each text's log-likelihood, every token predicted once: windows of max_length, the
        first conditioned on <|endoftext|>, each later one with max_length tokens of context
        (lm_eval.utils.get_rolling_token_windows); all windows batched together."""
        windows, owner = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[n] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Each request's continuation, up to its first `until` string or <|endoftext|> (neither
        included) or max_gen_toks tokens; greedy unless its gen_kwargs sample. Requests with the
        same gen_kwargs and prompt length share a batch; the prompt is cut from the left to
        leave room for max_gen_toks within max_length, as HF's model does."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        results: list[str | None] = [None] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc=f"{NAME} generate_until") as bar:
            for members in groups.values():
                until, max_new, temperature, top_k = self._generation_settings(requests[members[0]].args[1])
                prompts = {i: (self.tok_encode(requests[i].args[0]) or [EOT])[-(self.max_length - max_new):]
                           for i in members}
                by_length: dict[int, list[int]] = {}
                for i in sorted(members, key=lambda i: -len(prompts[i])):  # longest first
                    by_length.setdefault(len(prompts[i]), []).append(i)
                for same in by_length.values():
                    for start in range(0, len(same), self.batch_size):
                        batch = same[start:start + self.batch_size]
                        texts = self._generate([prompts[i] for i in batch], until, max_new, temperature, top_k)
                        for i, text in zip(batch, texts):
                            results[i] = text
                            self.cache_hook.add_partial("generate_until", requests[i].args, text)
                        bar.update(len(batch))
        return results

    @torch.no_grad()
    def _generate(self, prompts: list[list[int]], until: list[str], max_new: int, temperature: float,
                  top_k: int | None) -> list[str]:
        """Continue prompts of one length with the KV cache, as GPT.generate does, until every
        row has met an until string or <|endoftext|>, or max_new tokens."""
        caches = self.model.new_caches(len(prompts[0]) + max_new)
        new: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        next_input = torch.tensor(prompts, device=self._device)
        for _ in range(max_new):
            with self.autocast():
                hidden, _ = self.model.features(next_input, caches)
                logits = self.model.lm_head(hidden[:, -1])[:, :self.vocab]
            next_input = sample_next(logits, temperature, top_k)
            for row, token in enumerate(next_input[:, 0].tolist()):
                if done[row] or token == EOT:
                    done[row] = True
                    continue
                new[row].append(token)
                done[row] = any(s in self.tok_decode(new[row]) for s in until)
            if all(done):
                break
        return [_cut(self.tok_decode(tokens), until) for tokens in new]

    def _generation_settings(self, gen_kwargs: dict) -> tuple[list[str], int, float, int | None]:
        """(until strings, max_gen_toks, temperature (0: greedy), top_k) of a request's
        gen_kwargs, read as lm-eval's HF model reads them; an option gptlab's sampling does not
        have is refused rather than ignored."""
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        unsupported = {k: v for k, v in kwargs.items() if k not in GEN_KWARGS and not (k == "top_p" and v == 1.0)}
        if unsupported:
            raise HarnessError(f"--model {NAME} samples with temperature and top_k only; these gen_kwargs would be "
                               f"ignored: {unsupported}. Remove them (--gen_kwargs overrides a task's)")
        max_new = kwargs["max_gen_toks"]
        if max_new >= self.max_length:
            raise HarnessError(f"max_gen_toks={max_new} leaves no room for the prompt in max_length={self.max_length}; "
                               f"lower it (--gen_kwargs max_gen_toks=N, or model_args max_gen_toks=N)")
        temperature = float(kwargs.get("temperature", 1.0)) if kwargs["do_sample"] else 0.0  # HF's default: 1
        return [s for s in kwargs["until"] if s], max_new, temperature, kwargs.get("top_k")


def _positive_int(name: str, value, problems: list[str]) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(number) != str(value).strip():
        problems.append(f"{name}={value!r} must be a positive whole number" +
                        (" (batch_size=auto is not supported: give a number)" if name == "batch_size" else ""))
        return 1
    return number


def _cut(text: str, until: list[str]) -> str:
    """text up to the first occurrence of any until string."""
    for stop in until:
        text = text.split(stop)[0]
    return text


def register() -> None:
    """Make `gptlab` a name lm-eval's --model takes, beside its own models (which lm-eval
    registers only into an empty registry, so they go first)."""
    import lm_eval.models  # noqa: F401
    if NAME not in model_registry:  # an entry point may have named it already
        model_registry.register(NAME, target=GptlabLM)


register()


def main(argv: list[str] | None = None) -> int:
    """lm-eval's own command line, with --model gptlab registered; its errors for a bad
    checkpoint or model_arg are printed as one line. Where the Hugging Face hub cannot be reached,
    the command runs on the datasets' cache alone (it starts again with HF's offline switches, which
    the libraries read when imported) and a dataset missing from it is one error saying what to do."""
    from lm_eval.__main__ import cli_evaluate
    args = sys.argv[1:] if argv is None else argv
    if argv is None and not said_offline() and not reachable(HUB):
        os.execve(sys.executable, [sys.executable, "-m", "gptlab.evaluation.harness", *args], offline_environment())
    sys.argv = ["lm_eval", *args]
    try:
        cli_evaluate()
    except (HarnessError, CheckpointError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - offline, a task's dataset that is not cached fails in its library
        if not said_offline():
            raise
        print(f"error: lm-eval could not load a task's data ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
              f"The Hugging Face hub ({HUB}) cannot be reached from here, so its datasets come from the cache only "
              f"(~/.cache/huggingface, or $HF_HOME): run the same command once where there is network and copy the "
              f"cache here, or give a task of your own reading local files (--include_path DIR)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
