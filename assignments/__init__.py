"""Master notebooks of the graded assignments (one folder each), shipped as `rlhf_lab.assignment_sources`.

Build and grade them with `rlhf-lab assignments build` and `rlhf-lab assignments grade`; see README.md here.
"""
