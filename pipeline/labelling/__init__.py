"""How pseudo-labels are made, as pure functions the stages call: candidate phrases, relevance
maps, map→SAM prompting rules, quality gates, point targets, and D_ref composites with their
text."""
