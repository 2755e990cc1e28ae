"""Small random models and codebooks shared by the tests (CPU, seconds)."""
import torch

from dd.models.llamagen import GPT, GPTConfig

MICRO = GPTConfig(dim=32, n_layer=2, n_head=2, vocab_size=16, num_classes=3, grid_size=4)


def micro_teacher(seed: int = 0) -> GPT:
    """A random teacher with non-trivial logits (upstream zero-inits the head, which gives uniform logits)."""
    torch.manual_seed(seed)
    model = GPT(MICRO)
    torch.nn.init.normal_(model.output.weight, std=0.5)
    return model.eval().requires_grad_(False)


def micro_codebook(seed: int = 0, code_dim: int = 4) -> torch.Tensor:
    return torch.randn(MICRO.vocab_size, code_dim, generator=torch.Generator().manual_seed(seed))


def assert_same_tensors(module: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Every parameter and buffer of module equals reference's: values, dtype, layout and requires_grad."""
    expected = {**dict(reference.named_parameters()), **dict(reference.named_buffers())}
    got = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor) and got[name].stride() == tensor.stride(), name
        assert got[name].dtype == tensor.dtype and got[name].requires_grad == tensor.requires_grad, name


class CountingStudent:
    """A student whose calls are recorded (their timesteps): the hybrid sampler skips the first call when the
    teacher remakes every token it would keep."""

    def __init__(self, student):
        self.student, self.timesteps = student, []

    def __getattr__(self, name):            # config and the rest: the student's own
        return getattr(self.student, name)

    def predict(self, labels, inputs, timestep):
        self.timesteps.append(timestep)
        return self.student.predict(labels, inputs, timestep)
