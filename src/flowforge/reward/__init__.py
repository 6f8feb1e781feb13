"""The reward-model ensemble: predict image quality from (prompt, workflow) without rendering.

``train`` fits K members (`train_ensemble`), ``ensemble`` loads and scores with them
(`load_ensemble`, `RewardEnsemble.predict`: the policy's ``RewardScorer``), ``evaluate``
measures them on held-out prompts and workflows. docs/reward.md has the design and numbers.
"""
