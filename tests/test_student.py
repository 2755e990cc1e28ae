"""The DD student: initialised from the teacher, separate from it, trained by cross-entropy on pairs (one-hot or soft targets)."""
import torch

from dd.dd1 import soft_targets
from dd.raster.student import DDStudent, student_inputs, student_loss
from tests.helpers import MICRO, assert_same_tensors, micro_codebook, micro_teacher


def test_initialisation_copies_every_shared_teacher_weight():
    teacher, codebook = micro_teacher(), micro_codebook()
    student = DDStudent.from_teacher(teacher, codebook)
    teacher_state, student_state = teacher.state_dict(), student.gpt.state_dict()
    shared = set(teacher_state) - {"tok_embeddings.weight"}
    assert shared == set(student_state)
    for key in shared:
        assert torch.equal(teacher_state[key], student_state[key]), key
    # a copy, not the same tensors: training the student must never move the frozen teacher
    assert all(s.data_ptr() != t.data_ptr() for s, t in zip(student.gpt.parameters(), teacher.parameters()))
    assert not any(name.startswith("teacher") for name, _ in student.named_modules())


def test_from_teacher_equals_init_then_load_and_draws_nothing():
    """Built on the meta device, the student holds exactly what a randomly initialised one holds after loading the
    teacher and its least-squares input projection (same values, dtypes, layouts), and the global RNG is left
    as it was."""
    teacher, codebook = micro_teacher(), micro_codebook()
    rng = torch.get_rng_state()
    student = DDStudent.from_teacher(teacher, codebook)
    assert torch.equal(torch.get_rng_state(), rng)
    reference = DDStudent(teacher, codebook.shape[1])
    reference.gpt.load_state_dict({k: v for k, v in teacher.state_dict().items() if not k.startswith("tok_")})
    design = torch.cat([codebook, torch.ones(len(codebook), 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, teacher.tok_embeddings.weight.detach().double()).solution
    with torch.no_grad():
        reference.input_projection.weight.copy_(solution[:-1].T)
        reference.input_projection.bias.copy_(solution[-1])
    reference.noise_logits.start_from(codebook)
    assert_same_tensors(student, reference)


def test_input_projection_embeds_codes_like_the_teacher():
    """Least-squares init: Linear(c_j) is the teacher's embedding of token j, as well as a d-dim map can."""
    teacher, codebook = micro_teacher(), micro_codebook(code_dim=MICRO.vocab_size - 1)   # d + bias = V: exact
    student = DDStudent.from_teacher(teacher, codebook)
    projected = student.input_projection(codebook)
    assert torch.allclose(projected, teacher.tok_embeddings.weight, atol=1e-4)


def test_inputs_and_loss_follow_the_timestep():
    teacher, codebook = micro_teacher(), micro_codebook()
    tokens = torch.randint(MICRO.vocab_size, (5, MICRO.num_image_tokens))
    noise = torch.randn(5, MICRO.num_image_tokens, codebook.shape[1])
    inputs = student_inputs(tokens, noise, codebook, torch.tensor([0, 3, 3, 16, 8]))
    assert torch.equal(inputs[0], noise[0])
    assert torch.equal(inputs[1, :3], codebook[tokens[1, :3]]) and torch.equal(inputs[1, 3:], noise[1, 3:])
    assert torch.equal(inputs[3], codebook[tokens[3]])
    student = DDStudent.from_teacher(teacher, codebook)
    loss = student_loss(student, torch.tensor([0, 1, 2, 0, 1]), noise, tokens, codebook, torch.tensor([0, 3, 3, 8, 8]))
    loss.backward()
    assert loss.item() > 0 and student.input_projection.weight.grad is not None


def test_noise_logits_add_each_input_dot_the_codebook():
    """At init the logits are the backbone's plus <x_i, c_j>, x_i position i's own input (the flow-map rule)."""
    teacher, codebook = micro_teacher(), micro_codebook()
    student = DDStudent.from_teacher(teacher, codebook).eval()
    labels, noise = torch.tensor([1, 2]), torch.randn(2, MICRO.num_image_tokens, codebook.shape[1])
    with torch.no_grad():
        with_rule = student(labels, noise, 0)
        student.noise_logits.weight.zero_()
        torch.testing.assert_close(with_rule - student(labels, noise, 0), noise @ codebook.T)


def test_student_output_is_causal_in_the_noise():
    """Output i may depend on eps_<=i (and the class) only, like the flow map's token i."""
    student = DDStudent.from_teacher(micro_teacher(), micro_codebook()).eval()
    noise = torch.randn(1, MICRO.num_image_tokens, 4)
    changed = noise.clone()
    changed[0, 9] += 1.0
    labels = torch.tensor([1])
    before, after = student(labels, noise, 0), student(labels, changed, 0)
    assert torch.allclose(before[0, :9], after[0, :9], atol=1e-6)
    assert not torch.allclose(before[0, 9], after[0, 9])


def test_student_overfits_a_few_pairs():
    """The one-step generator can learn a fixed noise -> tokens map (what distillation asks of it)."""
    torch.manual_seed(0)
    teacher, codebook = micro_teacher(), micro_codebook()
    student = DDStudent.from_teacher(teacher, codebook)
    tokens = torch.randint(MICRO.vocab_size, (8, MICRO.num_image_tokens))
    noise, labels = torch.randn(8, MICRO.num_image_tokens, 4), torch.arange(8) % 3
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(150):
        loss = student_loss(student, labels, noise, tokens, codebook, torch.zeros(8, dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (student.predict(labels, noise, 0) == tokens).float().mean() > 0.95


def test_soft_targets_favour_look_alike_codes():
    codebook = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.5, 0.0]])
    targets = soft_targets(codebook, 0.5)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert targets[0].argmax() == 0 and targets[0, 1] > targets[0, 2] > targets[0, 3]   # mass falls with distance
    assert torch.equal(soft_targets(codebook, 0.0), torch.eye(4))
    # Width 0 is plain cross-entropy.
    teacher, micro = micro_teacher(), micro_codebook()
    student = DDStudent.from_teacher(teacher, micro)
    tokens = torch.randint(MICRO.vocab_size, (3, MICRO.num_image_tokens))
    noise, labels, timesteps = torch.randn(3, MICRO.num_image_tokens, 4), torch.tensor([0, 1, 2]), torch.tensor([0, 3, 8])
    one_hot = student_loss(student, labels, noise, tokens, micro, timesteps, soft_targets(micro, 0.0))
    assert torch.allclose(one_hot, student_loss(student, labels, noise, tokens, micro, timesteps))
    assert not torch.allclose(one_hot, student_loss(student, labels, noise, tokens, micro, timesteps, soft_targets(micro, 0.5)))
