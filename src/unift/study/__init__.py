"""Studies: `unift compare` runs methods x seeds at equal budgets and reports intervals (spec, runner,
stats, report)."""
