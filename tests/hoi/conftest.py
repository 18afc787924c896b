"""HOI tests run torch on one thread: the fit is many small ops, and on a shared 2-core machine two threads
per process only contend (measured: 10x slower under load). Restored after each test."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
