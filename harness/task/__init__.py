"""The sealed task (SPEC §9): export a workspace for one attempt, snapshot it, grade it from outside."""
