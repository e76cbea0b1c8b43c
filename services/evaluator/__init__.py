"""The evaluator service: heterogeneous treatment effects of logged decisions
(EconML LinearDML with the logged propensities), HTML reports and effect predictions."""
