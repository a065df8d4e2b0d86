"""The paper's analyses of a finished benchmark (`lookahead analyze KIND`) and the HTML report
(`lookahead report`); ``kinds.run_analysis`` dispatches."""
