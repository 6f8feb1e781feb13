"""The policy: a causal LM that writes workflows in the text form (docs/policy.md).

``vocab`` and ``tokenizer`` fit the token inventory (one atomic token per workflow word),
``model`` builds or loads the LM, ``sft`` trains it (and the ComfyGen-FT baseline),
``sample`` generates workflows, ``design`` answers one user request.
"""
