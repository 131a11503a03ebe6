"""Small helpers shared by test modules (fixtures live in conftest.py)."""
import torch


def random_tokens(b: int = 3, n: int = 9, seed: int = 0) -> torch.Tensor:
    """[batch pos] random ids of the tiny models' byte vocabulary, BOS (1) first."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(3, 259, (b, n), generator=g)
    t[:, 0] = 1
    return t


def last_logit_diff(lg: torch.Tensor) -> torch.Tensor:
    """The toy metric of the patching tests: logit 5 minus logit 7 at the last position, batch mean."""
    return (lg[:, -1, 5].float() - lg[:, -1, 7].float()).mean()
