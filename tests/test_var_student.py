"""The DD student for VAR teachers: initialised from the teacher, block-causal in the noise, sampled in 1-2 steps."""
import copy
import math

import torch

from dd.models.var import PRESETS, VAR
from dd.next_scale.student import (VARStudent, data_mask, noise_position_loss, sample_var_dd, student_attn_bias, student_inputs, student_loss)
from tests.helpers import CountingStudent, assert_same_tensors
from tests.test_var import build_tiny

TINY = PRESETS["var-tiny"]   # 6 scales (1, 2, 3, 4, 6, 8), 130 tokens, V = 256, E = 8
L, E, V, FIRST = TINY.num_tokens, TINY.code_dim, TINY.vocab_size, TINY.first_len


def tiny_teacher(seed: int = 0) -> VAR:
    """A frozen var-tiny teacher with every weight random and O(1) effects (tests/test_var.py's build_tiny)."""
    return build_tiny(seed).requires_grad_(False)


def tiny_codebook(seed: int = 0) -> torch.Tensor:
    return torch.randn(V, E, generator=torch.Generator().manual_seed(seed))


def randomise_new_parameters(student: VARStudent, seed: int = 0) -> VARStudent:
    """Make the zero-initialised kind parameters nonzero, so the checks see every path through the student."""
    g = torch.Generator().manual_seed(seed)
    state = student.state_dict()
    with torch.no_grad():
        for name in student.new_parameter_names():
            state[name].copy_(torch.randn(state[name].shape, generator=g) * 0.2)
    return student.eval()


def random_batch(batch: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, TINY.num_classes, (batch,), generator=g)
    tokens = torch.randint(0, V, (batch, L), generator=g)
    noise = torch.randn(batch, L, E, generator=g)
    return labels, tokens, noise


def test_from_teacher_copies_every_shared_weight_and_leaves_the_teacher_alone():
    teacher, codebook = tiny_teacher(), tiny_codebook()
    before = copy.deepcopy(teacher.state_dict())
    student = VARStudent.from_teacher(teacher, codebook)
    teacher_state, student_state = teacher.state_dict(), student.var.state_dict()
    for key, value in teacher_state.items():
        assert torch.equal(student_state[key], value), key
        assert torch.equal(value, before[key]), key          # the teacher is unchanged
    assert set(student.state_dict()) == ({f"var.{k}" for k in teacher_state} | student.new_parameter_names()
                                         | {"noise_logits.weight"})
    for name in student.new_parameter_names():
        assert torch.all(student.state_dict()[name] == 0), name
    assert torch.equal(student.noise_logits.weight, codebook)    # the flow-map rule (dd.student NoiseLogits)
    # separate storage, and the teacher is no submodule of the student
    teacher_ptrs = {t.data_ptr() for t in teacher.state_dict().values()}
    assert not teacher_ptrs & {s.data_ptr() for s in student.state_dict().values()}
    teacher_modules = {id(m) for m in teacher.modules()}
    assert not teacher_modules & {id(m) for m in student.modules()}
    # training the student does not move the teacher
    labels, tokens, noise = random_batch(2)
    student_loss(student, labels, noise, tokens, codebook, 0).backward()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_from_teacher_equals_init_then_load_and_draws_nothing():
    """Built on the meta device, the student holds exactly what a randomly initialised one holds after loading the
    teacher (same values, dtypes, layouts, buffers), and the global RNG is left as it was."""
    teacher, codebook = tiny_teacher(), tiny_codebook()
    rng = torch.get_rng_state()
    student = VARStudent.from_teacher(teacher, codebook)
    assert torch.equal(torch.get_rng_state(), rng)
    reference = VARStudent(teacher.config)
    reference.var.load_state_dict(teacher.state_dict(), strict=False)
    reference.noise_logits.start_from(codebook)
    assert_same_tensors(student, reference)


@torch.no_grad()
def test_at_init_every_block_computes_the_teacher_block():
    """'Reproduces the teacher where shared': with kind_proj zero, block i of the student maps (h, cond, bias, any
    kind) exactly to the teacher block's output on (h, cond, bias); hence the start token's output is the
    teacher's scale-0 prediction."""
    teacher, codebook = tiny_teacher(1), tiny_codebook()
    student = VARStudent.from_teacher(teacher, codebook).eval()
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3, FIRST + L, TINY.dim, generator=g)
    kind = torch.randn(3, FIRST + L, TINY.dim, generator=g)
    labels = torch.tensor([0, 4, TINY.num_classes])
    cond = teacher.condition(labels)
    for t_block, s_block in zip(teacher.blocks, student.var.blocks):
        assert torch.equal(s_block(h, cond, student.attn_bias, kind), t_block(h, cond, student.attn_bias))
        # and a nonzero kind_proj does change it (the check above can fail)
        changed = copy.deepcopy(s_block)
        changed.kind_proj.bias.fill_(0.1)
        assert not torch.allclose(changed(h, cond, student.attn_bias, kind), t_block(h, cond, student.attn_bias))
    _, tokens, noise = random_batch(3)
    start_logits = student.var.logits(student.hidden(labels, noise, 0)[:, :FIRST], cond)   # (B, first, V)
    teacher_inputs = torch.randn(3, L - FIRST, E, generator=g)
    torch.testing.assert_close(start_logits, teacher(labels, teacher_inputs)[:, :FIRST], rtol=0, atol=1e-5)


def test_mask_is_block_causal_with_the_token_itself():
    bias = student_attn_bias(TINY)
    assert bias.shape == (FIRST + L, FIRST + L)
    visible = bias == 0
    assert torch.all(bias[~visible] == -math.inf)
    assert visible[0].tolist() == [True] + [False] * L          # the start token sees itself only
    start, stop = TINY.scale_slices[3]
    row = visible[FIRST + start + 1]                             # second token of scale 3
    assert row[: FIRST + start].all()                            # start token and every coarser scale
    assert row[FIRST + start + 1] and row.sum() == FIRST + start + 1   # itself, nothing else


@torch.no_grad()
def test_noise_of_a_token_reaches_itself_and_finer_scales_only():
    student = randomise_new_parameters(VARStudent.from_teacher(tiny_teacher(2), tiny_codebook()))
    labels, tokens, noise = random_batch(2, seed=4)
    codebook = tiny_codebook()
    for timestep, k in ((0, 3), (2, 3), (0, 0), (3, 5)):
        start, stop = TINY.scale_slices[k]
        inputs = student_inputs(tokens, noise, codebook, timestep, TINY)
        j = start + (stop - start) // 2                          # a token of scale k
        changed = inputs.clone()
        changed[:, j] += 1.0
        base, out = student(labels, inputs, timestep), student(labels, changed, timestep)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)        # coarser and earlier siblings
        torch.testing.assert_close(out[:, j + 1: stop], base[:, j + 1: stop], rtol=0, atol=1e-6)  # later siblings
        assert not torch.allclose(out[:, j], base[:, j], atol=1e-3)                   # its own eps
        if stop < L:
            assert not torch.allclose(out[:, stop:], base[:, stop:], atol=1e-3)       # finer scales


def test_student_inputs_put_codes_for_data_scales_and_noise_elsewhere():
    labels, tokens, noise = random_batch(4)
    codebook = tiny_codebook()
    timesteps = torch.tensor([0, 2, 6, 4])
    inputs = student_inputs(tokens, noise, codebook, timesteps, TINY)
    assert inputs.shape == (4, L, E)
    for b, t in enumerate(timesteps.tolist()):
        boundary = TINY.scale_slices[t][0] if t < TINY.num_scales else L   # first token of scale t
        assert torch.equal(inputs[b, :boundary], codebook[tokens[b, :boundary]])
        assert torch.equal(inputs[b, boundary:], noise[b, boundary:])
    assert TINY.scale_slices[2][0] == 5                             # scales 0 and 1 hold 1 + 4 tokens
    assert torch.equal(student_inputs(tokens, noise, codebook, 2, TINY), torch.stack(
        [student_inputs(tokens[b:b + 1], noise[b:b + 1], codebook, torch.tensor([2]), TINY)[0] for b in range(4)]))
    assert data_mask(TINY, 2, "cpu").sum() == 5


def test_loss_ignores_data_positions_and_decreases_with_training():
    torch.manual_seed(0)
    codebook = tiny_codebook()
    student = VARStudent.from_teacher(tiny_teacher(3), codebook).train()
    labels, tokens, noise = random_batch(4, seed=5)
    timesteps = torch.tensor([0, 3, 2, 0])
    with torch.no_grad():
        logits = student(labels, student_inputs(tokens, noise, codebook, timesteps, TINY), timesteps)
    loss = noise_position_loss(logits, tokens, timesteps, TINY)
    assert torch.isfinite(loss)
    targets = tokens.clone()
    boundary = TINY.scale_slices[3][0]
    targets[1, :boundary] = (targets[1, :boundary] + 1) % V         # positions already data in row 1
    torch.testing.assert_close(noise_position_loss(logits, targets, timesteps, TINY), loss, rtol=0, atol=0)
    targets[1, boundary] = (targets[1, boundary] + 1) % V           # a position still noise
    assert noise_position_loss(logits, targets, timesteps, TINY) != loss

    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = student_loss(student, labels, noise, tokens, codebook, timesteps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.1
    assert student.kind_embedding.weight.grad.abs().sum() > 0   # the new parameters are trained


def test_sampling_one_and_two_steps():
    codebook = tiny_codebook()
    student = randomise_new_parameters(VARStudent.from_teacher(tiny_teacher(4), codebook))
    labels, _, noise = random_batch(4, seed=6)
    one = sample_var_dd(student, codebook, 1, 2, labels, noise)
    assert one.shape == (4, L) and one.dtype == torch.long
    assert one.min() >= 0 and one.max() < V
    with torch.no_grad():
        torch.testing.assert_close(one, student.predict(labels, noise, 0), rtol=0, atol=0)
    intermediate = 3
    boundary = TINY.scale_slices[intermediate][0]
    two = sample_var_dd(student, codebook, 2, intermediate, labels, noise)
    assert two.shape == (4, L)
    assert torch.equal(two[:, :boundary], one[:, :boundary])
    with torch.no_grad():
        refined = student.predict(labels, student_inputs(one, noise, codebook, intermediate, TINY), intermediate)
    assert torch.equal(two[:, boundary:], refined[:, boundary:])
    assert not torch.equal(two[:, boundary:], one[:, boundary:])     # the second step does change later scales
    # independent of the batch: the same rows as 4 and as 2 + 2
    for steps in (1, 2):
        whole = sample_var_dd(student, codebook, steps, intermediate, labels, noise)
        halves = torch.cat([sample_var_dd(student, codebook, steps, intermediate, labels[i:i + 2], noise[i:i + 2])
                            for i in (0, 2)])
        assert torch.equal(whole, halves)


def test_hybrid_sampling_puts_the_teachers_scales_between_the_two_student_steps():
    """pre-trained-n-m in scales (method.md section 6), m = 3: the first step's first n = 3 - teacher_steps scales,
    the teacher's continuation of them to scale m, then the student's second step at t = m. With n = 0 the first
    step is skipped: its tokens would all be replaced."""
    codebook = tiny_codebook()
    student = randomise_new_parameters(VARStudent.from_teacher(tiny_teacher(4), codebook))
    labels, _, noise = random_batch(4, seed=6)
    boundary = TINY.scale_slices[2][1]                               # tokens of the first m = 3 scales
    calls = []

    def teacher(labels, noise, stop, given):                         # a stand-in that records what it is given
        calls.append((stop, given))
        made = torch.arange(boundary).expand(len(labels), -1) % V
        return made if given is None else torch.cat([given, made[:, given.shape[1]:]], dim=1)

    one = sample_var_dd(student, codebook, 1, 3, labels, noise)
    for teacher_steps in (1, 3):
        calls.clear()
        counting = CountingStudent(student)
        tokens = sample_var_dd(counting, codebook, 2, 3, labels, noise, teacher=teacher, teacher_steps=teacher_steps)
        assert counting.timesteps == ([0, 3] if teacher_steps < 3 else [3])
        stop, given = calls[0]
        assert len(calls) == 1 and stop == 3
        made = teacher(labels, noise, stop, given)
        if teacher_steps == 1:
            assert torch.equal(given, one[:, :TINY.scale_slices[1][1]])      # the first step's first 2 scales
        else:
            assert given is None
        with torch.no_grad():
            inputs = student_inputs(torch.cat([made, one[:, boundary:]], dim=1), noise, codebook, 3, TINY)
            second = student.predict(labels, inputs, 3)
        assert torch.equal(tokens, torch.cat([made, second[:, boundary:]], dim=1))
