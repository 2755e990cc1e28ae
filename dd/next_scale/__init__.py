"""The next-scale family: VAR-style teachers that draw a whole scale of tokens a step, coarse to fine.

tokenizer.py (VAR's multi-scale VQVAE), teacher.py (the ramped guidance, the next-scale loop, teacher forcing),
sampling.py (the teacher's sampler, the skip-k baselines, the flow-map sequence map) and student.py (the DD
student with its block-causal mask); each implements its part of dd/families/__init__.py's interface.
"""
