"""Distilled Decoding for image autoregressive models."""
