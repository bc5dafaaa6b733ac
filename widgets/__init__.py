"""Browser side of rlhf-lab's custom widgets (ES modules and CSS), shipped inside the wheel."""
