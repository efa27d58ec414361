"""The one loop every write into a photo manager goes through (`apply`): apply, undo and
recorded runs, each decision passed in by the feature, each write journaled ahead."""
