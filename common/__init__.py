"""Small pieces every package shares: user-facing errors and the run folder."""
