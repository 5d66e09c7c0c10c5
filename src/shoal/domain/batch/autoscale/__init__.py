"""Azure Batch's autoscale formula language: a tokenizer, a recursive-descent parser, a static type checker
and an evaluator, all pure (no I/O, no database, the clock and random numbers injected).

    program = parse("$TargetDedicatedNodes = min(10, avg($PendingTasks.GetSample(TimeInterval_Minute * 5)));")
    result = evaluate(program, Metrics(now=..., series={"PendingTasks": [...]}),
                      current_dedicated=0, current_low_priority=0)
    result.target_dedicated, result.results   # 3, "$TargetDedicatedNodes=3.5;$TargetLowPriorityNodes=0;..."

Modules: ``lexer`` (tokens), ``parser`` (statements), ``checker`` (types), ``evaluator`` (running),
``functions``, ``sampling`` (metrics and ``GetSample``), ``values`` (timestamps, intervals, formatting),
``names`` (service-defined variables, constants, functions), ``formula`` (this API).
"""

from shoal.domain.batch.autoscale.errors import EVALUATION_ERROR, SYNTAX_ERROR, FormulaError
from shoal.domain.batch.autoscale.formula import Evaluation, Program, evaluate, explain, parse
from shoal.domain.batch.autoscale.sampling import Metrics, Sample

__all__ = ["EVALUATION_ERROR", "SYNTAX_ERROR", "Evaluation", "FormulaError", "Metrics", "Program", "Sample",
           "evaluate", "explain", "parse"]
