import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlab.core.config import TrainingConfig
from gptlab.data.loader import TokenLoader
from gptlab.evaluation.evaluator import Evaluator
from gptlab.training.distributed import Dist
from tests.conftest import tiny_model


def by_hand(model, tokens: np.ndarray, n_tokens: int, T: int) -> float:
    """Mean cross-entropy per token over the first n_tokens // T whole sequences, one sequence at a time."""
    losses = []
    for i in range(n_tokens // T):
        seq = torch.from_numpy(tokens[i * T:(i + 1) * T + 1].astype(np.int64))
        losses.append(F.cross_entropy(model(seq[None, :-1]).logits[0], seq[1:], reduction="sum").item())
    return sum(losses) / (n_tokens // T * T)


@pytest.mark.parametrize("B", [8, 3, 1])
def test_validation_scores_the_same_tokens_whatever_the_micro_batch(B):
    """val_tokens=640 is 20 sequences of 32: batches of 8 (8+8+4), of 3 (six of 3 and one of 2) or of 1."""
    tokens = np.random.default_rng(0).integers(0, 97, size=5000).astype(np.uint16)
    model = tiny_model("baseline").eval()
    cfg = TrainingConfig(val_tokens=640 + 17, sequence_length=32, hellaswag=False, num_samples=0)  # 17: not a whole sequence
    evaluator = Evaluator(cfg, TokenLoader([tokens], B, 32, name="val"), Dist())
    with torch.no_grad():
        assert evaluator.val_loss(model) == pytest.approx(by_hand(model, tokens, 640, 32), abs=1e-5)


def test_more_validation_tokens_than_the_split_holds_is_refused():
    from gptlab.data.shards import DataError
    from gptlab.data.sources import open_data
    cfg = TrainingConfig(data="embedded", val_tokens=10_000_000, sequence_length=64)
    with pytest.raises(DataError, match=r"train.val_tokens=10,000,000 but the validation data \(embedded val\) holds"):
        open_data(cfg, 8, 64)
