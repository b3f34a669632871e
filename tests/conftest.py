"""Shared test settings: small deterministic torch, two threads at most (CI has 2 cores)."""

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
