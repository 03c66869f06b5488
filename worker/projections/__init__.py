"""Projections: how an outbox event becomes an effect somewhere else."""
