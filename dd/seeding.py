"""Seeds derived from (stage seed, index): the one source of randomness for samples and training steps.

Sample i and training step s each get their own torch.Generator, so results never depend on batch size,
process count or resumption. torch's CPU generator (mt19937) keeps only 32 bits of a seed, so combining
seed and index by bit-shifting silently drops the seed; numpy's SeedSequence hashes the pair instead.
"""
import numpy as np
import torch


def indexed_generator(seed: int, index: int, stream: int = 0) -> torch.Generator:
    """The generator of item `index`; another `stream` gives the same item a second, independent one."""
    entropy = [seed, index] if stream == 0 else [seed, index, stream]
    state = np.random.SeedSequence(entropy).generate_state(1)[0]   # 32 well-mixed bits
    return torch.Generator().manual_seed(int(state))
