"""Acceptance: `core` holds the pure tensor functions (greedy prefix match, speculative / multi-draft rejection
sampling, residuals), each tested against brute-force enumeration; `rules` holds the engine plug-ins that walk a
draft's shape with them and the conf/acceptance builders."""
