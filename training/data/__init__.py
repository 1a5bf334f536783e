"""Training data: Osprey-724K records, stage-2 region texts, stage-1 captions, and their encoding."""
