//! The MigrationPlan controller: planner (pure) and its kube I/O shell.
