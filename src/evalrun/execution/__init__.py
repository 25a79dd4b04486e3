"""Stage 1, the calls: run options, plan, runner, worker pool, budget, response cache, run folder."""
