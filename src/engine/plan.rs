//! What a pipeline query computes, read off its logical plan: plain rows (stateless), or
//! an aggregate whose result the engine maintains across micro-batches. An aggregate is
//! kept by merging each batch's partial result into the state, so every output column
//! must be a GROUP BY column or an aggregate that merges: count and sum add up, min and
//! max take the smaller or larger.

use deltalake::datafusion::logical_expr::{Expr, LogicalPlan};

/// How a state value combines with a batch's partial value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    Sum,
    Min,
    Max,
}

impl Merge {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// No aggregate: each batch's rows are the output.
    Rows,
    /// GROUP BY `keys`, with one merge rule per value column (output column names).
    Aggregate {
        keys: Vec<String>,
        values: Vec<(String, Merge)>,
    },
}

/// Classify `plan` (as planned from the SQL, before optimisation).
pub(super) fn analyse(plan: &LogicalPlan) -> Result<Shape, String> {
    let (projection, aggregate) = match plan {
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Aggregate(a) => (p, a),
            other => {
                if contains_aggregate(other) {
                    return Err(unsupported(other));
                }
                return Ok(Shape::Rows);
            }
        },
        LogicalPlan::Sort(_) => {
            return Err("ORDER BY has no meaning for a streaming result; remove it".into())
        }
        LogicalPlan::Limit(_) => {
            return Err("LIMIT has no meaning for a streaming result; remove it".into())
        }
        other if contains_aggregate(other) => return Err(unsupported(other)),
        _ => return Ok(Shape::Rows),
    };
    let groups = aggregate.group_expr.len();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for (expr, field) in projection.expr.iter().zip(projection.schema.fields()) {
        let name = field.name().clone();
        let Expr::Column(column) = unalias(expr) else {
            return Err(format!(
                "output column '{name}' computes on an aggregate ({expr}); an incrementally \
                 maintained query may only select GROUP BY columns and count/sum/min/max"
            ));
        };
        let index = aggregate
            .schema
            .index_of_column(column)
            .map_err(|e| e.to_string())?;
        if index < groups {
            keys.push(name);
            continue;
        }
        let merge = merge_rule(&aggregate.aggr_expr[index - groups])
            .map_err(|why| format!("output column '{name}': {why}"))?;
        values.push((name, merge));
    }
    if keys.len() != groups {
        return Err("select every GROUP BY column: they are the key of the result".into());
    }
    Ok(Shape::Aggregate { keys, values })
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

fn merge_rule(e: &Expr) -> Result<Merge, String> {
    let Expr::AggregateFunction(f) = unalias(e) else {
        return Err(format!("{e} is not an aggregate function"));
    };
    if f.params.distinct {
        return Err(
            "DISTINCT aggregates cannot be merged across micro-batches; drop DISTINCT".into(),
        );
    }
    match f.func.name() {
        "count" | "sum" => Ok(Merge::Sum),
        "min" => Ok(Merge::Min),
        "max" => Ok(Merge::Max),
        other => Err(format!(
            "{other}() cannot be merged across micro-batches; use count, sum, min or max \
             (an average is sum / count, computed by the reader)"
        )),
    }
}

fn contains_aggregate(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Aggregate(_)) || plan.inputs().into_iter().any(contains_aggregate)
}

fn unsupported(plan: &LogicalPlan) -> String {
    let top = plan.display().to_string();
    format!(
        "the aggregate must be the outermost step of the query (SELECT ... GROUP BY, \
         without HAVING or an outer query); found {top} above it"
    )
}
