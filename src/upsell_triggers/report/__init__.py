"""The conversion report: outcomes of a run counted per rule, variant and group, with intervals."""
