"""What a model's text means beyond its words: tool calls and reasoning, split off its answer."""
