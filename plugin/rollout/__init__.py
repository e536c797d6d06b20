"""Guarded rollouts (issue 17): shift an endpoint's traffic to a new deployment in steps, judged by guards.

:mod:`.plan` is the pure part (steps, traffic maps, guard decisions); :mod:`.driver` runs rollouts inside
``tiffin serve``; :mod:`.agreement` compares a mirror's answers with the primary's. See docs/rollouts.md.
"""
