"""Test-wide settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The suite runs many small tensor ops; on a 2-core machine shared with other work, OpenMP's second
    # thread spins waiting for a busy core and makes small ops up to 10x slower. One thread is fastest here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
