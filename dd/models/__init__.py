"""Model families: the same classes load published checkpoints and build the embedded tiny teachers."""
