"""The DD student for raster-order teachers (method.md section 5; the paper's released LlamaGen student).

The student is the teacher's backbone, initialised from the teacher's weights, that reads CONTINUOUS token
vectors: the codebook vector of a token that is already data, or the noise vector of a position that is still
noise. Input i at sequence position 1 + i (after the class token) is that vector for image token i, and the
output at the same position predicts token i, so with causal attention output i sees the class, every earlier
input and its own noise eps_i, which is exactly what the flow map's token i depends on (eps_i and q_<i).

Changes to the teacher's module tree, as the paper's code does:
  - tok_embeddings (nn.Embedding) is replaced by input_projection = Linear(d -> C). It is initialised by least
    squares so that input_projection(c_j) ~ tok_embeddings[j]: a data position starts out embedded as the
    teacher embeds that token.
  - kind_embedding = Embedding(2, C) marks each position noise (0) or data (1); it starts at zero.
The teacher's logits head predicts the distilled token; at timestep t the first t inputs are data.

Loss (our choice; the paper leaves it unpublished): cross-entropy of the logits at the positions that are
still noise against a target that is the pair's token softened over its neighbouring codes,
    target_y(j) = softmax_j( -||c_j - c_y||^2 / (2 sigma^2) ),  sigma = target_width x the codebook's median
    nearest-neighbour distance (target_width 0: the one-hot token, plain cross-entropy).
Why: the target is a deterministic function of (class, noise), so one-hot cross-entropy is its maximum-
likelihood fit and argmax its sampler, but it scores a miss by a look-alike code as badly as a miss by an
unrelated one. The codes keep the pixel geometry (dd/raster/tokenizer.py), so the soft target teaches the student
that a near miss is nearly right. On the embedded default (900 steps, FID of 10k samples), on one teacher's
pairs: width 0 (one-hot) 1-step 17.61 / 2-step 15.68, 0.5 16.38 / 16.26, 0.8 18.62 (1 step); on a later
teacher's pairs: 0.3 15.42 / 14.59 against 0.5 16.42 / 15.96. So 0.3 was compared side by side with 0.5 only.
Sampling is still argmax of the logits. Positions already data are given, not predicted, so they carry no loss.

Noise logits (our choice; both families): the logits are the teacher's head plus NoiseLogits, a linear map of
the position's own input vector, logit_j += <W_j, x_i> with W starting at the codebook. Why: the flow map
(dd/flow.py) picks token i from its own eps_i and the teacher's p_i much like argmax_j log p_j + <eps_i, c_j>
(its posterior over codes after one Euler step from pure noise to t = 1/2, without the terms that do not
depend on eps). Given the teacher's exact p (teacher-forced on the pairs), that rule picks the flow map's token
for 79% of var-tiny's tokens and 75% of llamagen-tiny's, where argmax p alone picks 53% and 64%
(scripts/flow_map_rule.py). The layer hands the student this product of its input and the codebook, which the
backbone would otherwise have to build through its LayerNorms and its head. Measured effect, everything else
the same (the committed `dvc repro` against the one before it): DD 1-step / 2-step FID var-tiny 24.15 / 21.88
against 24.50 / 22.33, llamagen-tiny 13.98 / 12.71 against 13.69 / 12.80; token agreement moved by under 1%.
Three of the four are better, each by about the run-to-run spread (a fresh clone reran var-tiny's 24.50 as
24.71). What keeps the 1-step student below the rule is the context, which it has to infer from the earlier
tokens' noise (its agreement falls from 94% at var-tiny's first scale to 41% at its last).

Dimensions: B batch, L image tokens, C model width, V codebook size, d code dimension.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dd.checkpoint import with_weights
from dd.dd1 import NoiseLogits, check_dd_steps
from dd.families import StudentParts
from dd.models.llamagen import GPT
from dd.sampling import TeacherContinuation


def data_mask(num_tokens: int, timestep: int | Tensor, device) -> Tensor:
    """True where a position is already data at timestep t (int, or (B,) per sample): (1 or B, L)."""
    positions = torch.arange(num_tokens, device=device)
    if isinstance(timestep, int):   # a Python int: no host-to-device copy (the sampler stays graph-capturable)
        return (positions < timestep)[None]
    return positions < timestep.reshape(-1, 1)


def student_inputs(tokens: Tensor, noise: Tensor, codebook: Tensor, timestep: int | Tensor) -> Tensor:
    """The trajectory state at timestep t: codes of the first t tokens, the original noise after them.

    tokens (B, L), noise (B, L, d), timestep an int or (B,) -> inputs (B, L, d).
    """
    is_data = data_mask(tokens.shape[1], timestep, tokens.device)
    return torch.where(is_data[..., None], codebook[tokens], noise)          # (B, L, d)


def fitted_input_projection(codebook: Tensor, embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares W (C, d), b (C,) with W c_j + b ~ embeddings[j] over the codebook (V, d), float64 on the CPU:
    a projection of continuous vectors that embeds each code as the token embedding table (V, C) embeds it."""
    design = torch.cat([codebook, torch.ones(len(codebook), 1, device=codebook.device)], dim=1)      # (V, d + 1)
    solution = torch.linalg.lstsq(design.double().cpu(), embeddings.detach().double().cpu()).solution  # (d + 1, C)
    return solution[:-1].T.contiguous(), solution[-1]


class DDStudent(nn.Module):
    def __init__(self, teacher_like: GPT, code_dim: int):
        super().__init__()
        config = teacher_like.config
        self.gpt = GPT(config)
        del self.gpt.tok_embeddings                      # the student never reads discrete tokens
        self.input_projection = nn.Linear(code_dim, config.dim)
        self.kind_embedding = nn.Embedding(2, config.dim)
        nn.init.zeros_(self.kind_embedding.weight)
        self.noise_logits = NoiseLogits(code_dim, config.vocab_size)

    @classmethod
    def from_teacher(cls, teacher: GPT, codebook: Tensor) -> "DDStudent":
        """A student whose shared weights are copies of the teacher's (the teacher itself is left untouched)."""
        # Every weight is the teacher's, fitted to it, a zero or the codebook, so the student is built on the meta
        # device and adopts them (dd.checkpoint.with_weights): no random init drawn only to be overwritten, and
        # nothing drawn from the global RNG. Copies: training the student must never move the frozen teacher.
        state = {f"gpt.{key}": value.detach().clone() for key, value in teacher.state_dict().items()
                 if not key.startswith("tok_embeddings.")}
        weight, bias = fitted_input_projection(codebook, teacher.tok_embeddings.weight)
        state |= {"input_projection.weight": weight, "input_projection.bias": bias,
                  "kind_embedding.weight": torch.zeros(2, teacher.config.dim),
                  "noise_logits.weight": codebook.detach().clone()}    # the flow-map rule (NoiseLogits)
        return with_weights(lambda: cls(teacher, codebook.shape[1]), state)

    def forward(self, labels: Tensor, inputs: Tensor, timestep: Tensor | int) -> Tensor:
        """labels (B,), inputs (B, L, d), timestep int or (B,) -> logits (B, L, V) for every image token."""
        is_data = data_mask(inputs.shape[1], timestep, inputs.device)
        tokens_h = self.input_projection(inputs) + self.kind_embedding(is_data.long().expand(len(inputs), -1))  # (B, L, C)
        h = torch.cat([self.gpt.embed_class(labels), tokens_h], dim=1)                      # (B, 1 + L, C)
        h = self.gpt.backbone(h)                                                            # (B, 1 + L, C)
        return self.gpt.logits(h[:, 1:]) + self.noise_logits(inputs).float()                # (B, L, V)

    def predict(self, labels: Tensor, inputs: Tensor, timestep: int) -> Tensor:
        """Tokens (B, L): argmax of the logits."""
        return self.forward(labels, inputs, timestep).argmax(-1)


def student_loss(student: DDStudent, labels: Tensor, noise: Tensor, tokens: Tensor, codebook: Tensor, timesteps: Tensor,
                 targets: Tensor | None = None) -> Tensor:
    """Cross-entropy at the positions still noise at each sample's timestep (B,), against the rows of
    `targets` (V, V) from soft_targets, or the one-hot tokens when targets is None."""
    logits = student(labels, student_inputs(tokens, noise, codebook, timesteps), timesteps)   # (B, L, V)
    is_noise = ~data_mask(tokens.shape[1], timesteps, tokens.device)                            # (B, L)
    if targets is None:
        per_token = F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")  # (B, L)
    else:
        per_token = -(targets[tokens] * logits.float().log_softmax(-1)).sum(-1)                 # (B, L)
    return (per_token * is_noise).sum() / is_noise.sum()


# ---------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def sample_dd(student, codebook: Tensor, steps: int, intermediate: int, labels: Tensor, noise: Tensor,
              teacher: TeacherContinuation | None = None, teacher_steps: int = 0) -> Tensor:
    """DD sampling (method.md section 6): one student call on pure noise, optionally a second at t2.

    Hybrid (teacher_steps > 0, 2 steps; the paper's pre-trained-n-m with m = t2, n = t2 - teacher_steps): before
    the second call the teacher's own sampler remakes tokens n..t2-1 from the first call's first n. With n = 0
    the teacher makes all of them, and the first call, whose tokens would all be replaced, is skipped.
    """
    check_dd_steps(steps, intermediate, noise.shape[1], teacher, teacher_steps)
    kept = intermediate - teacher_steps
    tokens = (student.predict(labels, noise, timestep=0) if steps == 1 or kept                       # (B, L)
              else torch.zeros_like(noise[..., 0], dtype=torch.long))
    if steps == 2:
        if teacher_steps:
            tokens = torch.cat([teacher(labels, noise, intermediate, tokens[:, :kept] if kept else None),
                                tokens[:, intermediate:]], dim=1)
        inputs = student_inputs(tokens, noise, codebook, intermediate)     # first t2 tokens as codes, rest noise
        tokens = torch.cat([tokens[:, :intermediate],
                            student.predict(labels, inputs, timestep=intermediate)[:, intermediate:]], dim=1)
    return tokens


# ---------------------------------------------------------------------------------------------------------
# The family interface (dd/families/__init__.py)
# ---------------------------------------------------------------------------------------------------------

def student_parts(teacher: GPT) -> StudentParts:
    """Timesteps count tokens: at timestep t the first t tokens are data."""
    return StudentParts(DDStudent.from_teacher, student_loss, student_inputs, lambda t: t,
                        teacher.config.num_image_tokens, "tokens", sample_dd)


def empty_student(teacher: GPT, code_dim: int) -> DDStudent:
    return DDStudent(teacher, code_dim)
