"""The DD student for next-scale (VAR) teachers (method.md sections 3, 5 and 6; the paper's VAR student).

Like dd.student for raster-order teachers, the student is the teacher's backbone, initialised from the
teacher's weights, that reads CONTINUOUS token vectors: the codebook vector of a token whose scale is already
data, or the token's own noise vector eps_i while its scale is still noise. Timesteps count scales
(method.md section 3): at t in {0..K} the first t scales are data, the rest noise.

Sequence layout (S = first_len + L positions; first_len = 1 in every preset, so S = 681 for d16):
  - positions 0..first_len-1: the "extra first scale", the teacher's start token (class embedding + pos_start)
    plus the teacher's level/position terms of scale 0, exactly what the teacher feeds at scale 0;
  - position first_len + i: image token i (scales coarse to fine, raster within a scale) =
    word_embed(input_i) + the teacher's level/position embedding of token i + kind_embedding(noise 0 / data 1).
    The output there predicts token i through the teacher's head (AdaLN head_nm + head).
  word_embed is reused as the input projection, as the paper does. (In the teacher it reads the VQVAE's
  area-resampled running reconstruction, not raw code vectors, so it starts out only roughly adapted.)

Mask: token i of scale k sees the start token, every token of scales < k and itself, and NOT the other tokens
of scale k: the flow map makes token i a function of its own eps_i and the coarser tokens only (the tokens of
one scale are independent given the coarser scales), so a token needs nothing else, and hiding the siblings'
noise keeps the student from learning dependencies the teacher does not have. The start token sees itself
only (with first_len > 1, the start positions see one another, as they would in the teacher).

Noise/data marking: kind_embedding = Embedding(2, C) is added at the input of every image-token position and,
as in the paper's VAR student, once more after the attention of every block through a per-block
Linear(C, C) (kind_proj). The start token carries no kind (a zero vector). kind_embedding and every kind_proj
start at zero, weight and bias, so at initialisation each student block computes exactly what the teacher's
block computes on the same hidden states; every other weight is a copy of the teacher's.

Noise logits: as in dd.student, the logits of token i are the teacher's head's plus NoiseLogits(input_i), a
linear map of the token's own input vector that starts at the codebook (logit_j += <eps_i, c_j>), the form of
the flow map's choice given p; it lives beside `var`, like kind_embedding.

Choices the paper leaves open (ours): the start token's kind (none) and its level/position terms (the
teacher's scale-0 ones); each image token's level/position terms are the teacher's for that token, so the
student's extra scale shifts nothing in the learned tables; the loss is cross-entropy at the positions still
noise (as dd.student: the target is a deterministic function of (class, noise), so argmax is the sampler),
against the one-hot token or dd.student's soft target over neighbouring codes; the paper's second, continuous
head is not built here.

Dimensions: B batch, L image tokens (all scales), S = first_len + L student positions, C model width,
V codebook size, E code dim (Cvae), K scales.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from dd.checkpoint import with_weights
from dd.dd1 import NoiseLogits, check_dd_steps
from dd.families import StudentParts
from dd.models.attention import visibility_bias
from dd.models.var import VAR, AdaLNSelfAttn, VARConfig, layer_norm
from dd.sampling import TeacherContinuation


def token_scales(config: VARConfig, device) -> Tensor:
    """Scale index of every image token (L,), int64, built on `device` (no host-to-device copy)."""
    return torch.cat([torch.full((p * p,), k, device=device) for k, p in enumerate(config.patch_nums)])  # (L,)


def data_mask(config: VARConfig, timestep: int | Tensor, device) -> Tensor:
    """True where a token's scale is already data at timestep t (int, or (B,) per sample): (1 or B, L)."""
    scales = token_scales(config, device)                                  # (L,)
    if isinstance(timestep, int):   # a Python int: no host-to-device copy (the sampler stays graph-capturable)
        return (scales < timestep)[None]                                   # (1, L)
    return scales < timestep.reshape(-1, 1)                                # (B, L)


def student_inputs(tokens: Tensor, noise: Tensor, codebook: Tensor, timestep: int | Tensor,
                   config: VARConfig) -> Tensor:
    """The trajectory state at timestep t: codes of the tokens of the first t scales, each token's own noise after.

    tokens (B, L), noise (B, L, E), codebook (V, E), timestep an int or (B,) -> inputs (B, L, E).
    """
    is_data = data_mask(config, timestep, tokens.device)                   # (1 or B, L)
    return torch.where(is_data[..., None], codebook[tokens], noise)        # (B, L, E)


def student_attn_bias(config: VARConfig, device=None) -> Tensor:
    """Additive mask (S, S), query row and key column: 0 where visible, -inf elsewhere.

    Levels: -1 for the start positions, k for a token of scale k. A query sees strictly coarser levels, itself,
    and (start positions only) the other start positions.
    """
    first = config.first_len
    level = torch.cat([torch.full((first,), -1, device=device), token_scales(config, device)])  # (S,)
    index = torch.arange(len(level), device=device)                                               # (S,)
    coarser = rearrange(level, "k -> 1 k") < rearrange(level, "q -> q 1")                         # (S, S)
    itself = rearrange(index, "k -> 1 k") == rearrange(index, "q -> q 1")                         # (S, S)
    both_start = rearrange(index < first, "k -> 1 k") & rearrange(index < first, "q -> q 1")      # (S, S)
    visible = coarser | itself | both_start                                                       # (S, S), bool
    return visibility_bias(visible)                                                              # (S, S)


class VARStudentBlock(AdaLNSelfAttn):
    """The teacher's block (same submodules and state-dict names) plus kind_proj = Linear(C, C), zero at init.

    forward adds kind_proj(kind) to the residual stream right after the attention branch; with kind_proj zero
    it is AdaLNSelfAttn.forward exactly (the same operations in the same order, plus an exact zero).
    """

    def __init__(self, config: VARConfig):
        super().__init__(config)
        self.kind_proj = nn.Linear(config.dim, config.dim)
        self.zero_new_parameters()

    @torch.no_grad()
    def zero_new_parameters(self) -> None:
        nn.init.zeros_(self.kind_proj.weight)
        nn.init.zeros_(self.kind_proj.bias)

    def forward(self, x: Tensor, cond: Tensor, attn_bias: Tensor, kind: Tensor) -> Tensor:
        """x (B, S, C), cond (B, C), attn_bias (S, S), kind (B, S, C) the kind embedding of each position."""
        ada = rearrange(self.ada_lin(cond), "b (six c) -> six b 1 c", six=6)  # 6 x (B, 1, C)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada
        x = x + self.attn(layer_norm(x, self.eps) * (1 + scale1) + shift1, attn_bias) * gamma1
        x = x + self.kind_proj(kind)                                          # (B, S, C)
        return x + self.ffn(layer_norm(x, self.eps) * (1 + scale2) + shift2) * gamma2  # (B, S, C)


def new_parameter_shapes(config: VARConfig) -> dict[str, tuple[int, ...]]:
    """The student's weights the teacher has no counterpart for (they start at zero), by state-dict key."""
    blocks = {f"var.blocks.{i}.kind_proj.{name}": shape for i in range(config.depth)
              for name, shape in (("weight", (config.dim, config.dim)), ("bias", (config.dim,)))}
    return {"kind_embedding.weight": (2, config.dim), **blocks}


class VARStudent(nn.Module):
    """`var` is a VAR of the teacher's config whose blocks are VARStudentBlocks; `kind_embedding` is new."""

    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = config
        self.var = VAR(config)
        self.var.blocks = nn.ModuleList(VARStudentBlock(config) for _ in range(config.depth))
        self.var.init_weights()   # the reference init for a student built from scratch (from_teacher overwrites it)
        self.kind_embedding = nn.Embedding(2, config.dim)   # 0 noise, 1 data
        self.noise_logits = NoiseLogits(config.code_dim, config.vocab_size)   # dd.student: the flow-map rule
        self.zero_new_parameters()
        # The student's own mask; derived from the config, so not saved (the teacher's mask buffer in `var` is).
        # Made on the CPU even under a meta-device context (dd.checkpoint.with_weights), as no file holds it.
        self.register_buffer("attn_bias", student_attn_bias(config, torch.device("cpu")), persistent=False)  # (S, S)

    @torch.no_grad()
    def zero_new_parameters(self) -> None:
        nn.init.zeros_(self.kind_embedding.weight)
        for block in self.var.blocks:
            block.zero_new_parameters()

    def new_parameter_names(self) -> set[str]:
        """State-dict keys the teacher does not have (all zero after from_teacher)."""
        return set(new_parameter_shapes(self.config))

    @classmethod
    def from_teacher(cls, teacher: VAR, codebook: Tensor) -> "VARStudent":
        """A student whose shared weights are copies of the teacher's; the teacher is read, never modified or kept.

        Guarantee (tested): student.var.state_dict() holds every teacher state-dict entry with an equal value (in
        separate storage), the only other entries are the zero kind_proj ones, kind_embedding is zero, and each
        student block maps (h, cond, bias, any kind) to what the teacher's block maps (h, cond, bias) to. As a
        consequence the student's start-token output gives the teacher's scale-0 logits.
        """
        config = teacher.config
        if tuple(codebook.shape) != (config.vocab_size, config.code_dim):
            raise ValueError(f"codebook {tuple(codebook.shape)} does not fit {config.vocab_size} x {config.code_dim}")
        reference = next(teacher.parameters())
        # Every weight is a copy of the teacher's, a zero or the codebook, so the student is built on the meta
        # device and adopts them (dd.checkpoint.with_weights): no random init drawn only to be overwritten
        # (var-d30: 41 s on 2 CPU cores) and nothing drawn from the global RNG. Copies: training the student
        # must never move the frozen teacher.
        state = {f"var.{key}": value.detach().clone() for key, value in teacher.state_dict().items()}
        state |= {name: torch.zeros(shape) for name, shape in new_parameter_shapes(config).items()}
        state["noise_logits.weight"] = codebook.detach().clone()       # the flow-map rule (dd.student NoiseLogits)
        return with_weights(lambda: cls(config), state).to(device=reference.device, dtype=reference.dtype)

    def hidden(self, labels: Tensor, inputs: Tensor, timestep: int | Tensor) -> Tensor:
        """labels (B,), inputs (B, L, E), timestep int or (B,) -> last hidden states (B, S, C) of every position."""
        var, first, L = self.var, self.config.first_len, self.config.num_tokens
        B = inputs.shape[0]
        is_data = data_mask(self.config, timestep, inputs.device)                       # (1 or B, L)
        kind_tokens = self.kind_embedding(is_data.long().expand(B, -1))                 # (B, L, C)
        kind = torch.cat([kind_tokens.new_zeros(B, first, self.config.dim), kind_tokens], dim=1)  # (B, S, C)
        cond = var.condition(labels)                                                    # (B, C)
        start = var.sos(labels) + var.level_position(0, first)                          # (B, first, C)
        tokens = var.embed_scale_inputs(inputs) + var.level_position(0, L) + kind_tokens  # (B, L, C)
        h = torch.cat([start, tokens], dim=1)                                           # (B, S, C)
        for block in var.blocks:
            h = block(h, cond, self.attn_bias, kind)                                    # (B, S, C)
        return h

    def forward(self, labels: Tensor, inputs: Tensor, timestep: int | Tensor) -> Tensor:
        """labels (B,), inputs (B, L, E), timestep int or (B,) -> logits (B, L, V) for every image token."""
        h = self.hidden(labels, inputs, timestep)                                       # (B, S, C)
        logits = self.var.logits(h[:, self.config.first_len:], self.var.condition(labels))  # (B, L, V)
        return logits + self.noise_logits(inputs).float()                               # (B, L, V)

    def predict(self, labels: Tensor, inputs: Tensor, timestep: int | Tensor) -> Tensor:
        """Tokens (B, L): argmax of the logits."""
        return self.forward(labels, inputs, timestep).argmax(-1)


def noise_position_loss(logits: Tensor, tokens: Tensor, timesteps: int | Tensor, config: VARConfig,
                        targets: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of logits (B, L, V) over the positions still noise, against the one-hot tokens (B, L)
    or, given `targets` (V, V) from dd.dd1.soft_targets, against each token's soft target row."""
    is_noise = ~data_mask(config, timesteps, tokens.device)                             # (1 or B, L)
    is_noise = is_noise.expand_as(tokens).float()                                       # (B, L)
    if targets is None:
        per_token = F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")  # (B, L)
    else:
        per_token = -(targets[tokens] * logits.float().log_softmax(-1)).sum(-1)                 # (B, L)
    return (per_token * is_noise).sum() / is_noise.sum()


def student_loss(student: VARStudent, labels: Tensor, noise: Tensor, tokens: Tensor, codebook: Tensor,
                 timesteps: int | Tensor, targets: Tensor | None = None) -> Tensor:
    """Cross-entropy at the positions still noise (scales >= t) at each sample's timestep (int or (B,)), against
    one-hot tokens or the soft targets (V, V) of dd.student (the same loss as the raster student's)."""
    config = student.config
    logits = student(labels, student_inputs(tokens, noise, codebook, timesteps, config), timesteps)  # (B, L, V)
    return noise_position_loss(logits, tokens, timesteps, config, targets)


@torch.inference_mode()
def sample_var_dd(student: VARStudent, codebook: Tensor, steps: int, intermediate_scales: int, labels: Tensor,
                  noise: Tensor, teacher: TeacherContinuation | None = None, teacher_steps: int = 0) -> Tensor:
    """DD sampling (method.md section 6): tokens (B, L) from labels (B,) and noise (B, L, E).

    1 step: argmax at t = 0 on pure noise. 2 steps: keep the first `intermediate_scales` scales of the 1-step
    output as data, the same noise elsewhere, run the student at t = intermediate_scales and take its tokens for
    the later scales. Hybrid (teacher_steps > 0) as dd.raster.student.sample_dd, in scales: the teacher remakes
    scales m - teacher_steps..m-1 (m = intermediate_scales) before the second call. Only the Python ints select
    the work; nothing synchronises with the device and every shape is static.
    """
    config = student.config
    check_dd_steps(steps, intermediate_scales, config.num_scales, teacher, teacher_steps)
    kept = intermediate_scales - teacher_steps
    tokens = (student.predict(labels, noise, 0) if steps == 1 or kept          # (B, L): t = 0, inputs = noise
              else torch.zeros_like(noise[..., 0], dtype=torch.long))
    if steps == 2:
        if teacher_steps:
            given = tokens[:, :config.scale_slices[kept - 1][1]] if kept else None
            made = teacher(labels, noise, intermediate_scales, given)           # (B, tokens of m scales)
            tokens = torch.cat([made, tokens[:, made.shape[1]:]], dim=1)
        inputs = student_inputs(tokens, noise, codebook, intermediate_scales, config)   # (B, L, E)
        refined = student.predict(labels, inputs, intermediate_scales)          # (B, L)
        keep = data_mask(config, intermediate_scales, noise.device)              # (1, L)
        tokens = torch.where(keep, tokens, refined)                             # (B, L)
    return tokens


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def student_parts(teacher: VAR) -> StudentParts:
    """Timesteps count scales: at timestep t the first t scales are data."""
    config = teacher.config
    return StudentParts(VARStudent.from_teacher, student_loss, functools.partial(student_inputs, config=config),
                        lambda t: config.scale_slices[t][0], config.num_scales, "scales", sample_var_dd)


def empty_student(teacher: VAR, code_dim: int) -> VARStudent:
    return VARStudent(teacher.config)
