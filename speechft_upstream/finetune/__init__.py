"""Step 1 of Speech-FT: fine-tuning θ0 into θ′ (stable fine-tuning, schedules, baselines)."""
