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

/// Why a query cannot be maintained batch by batch, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct Unsupported(String);

impl Unsupported {
    fn new(message: &str) -> Self {
        Self(message.into())
    }
}

/// Classify `plan` (as planned from the SQL, before optimisation).
pub(super) fn analyse(plan: &LogicalPlan) -> Result<Shape, Unsupported> {
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
            return Err(Unsupported::new(
                "ORDER BY has no meaning for a streaming result; remove it",
            ))
        }
        LogicalPlan::Limit(_) => {
            return Err(Unsupported::new(
                "LIMIT has no meaning for a streaming result; remove it",
            ))
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
            return Err(Unsupported(format!(
                "output column '{name}' computes on an aggregate ({expr}); an incrementally \
                 maintained query may only select GROUP BY columns and count/sum/min/max"
            )));
        };
        let index = aggregate
            .schema
            .index_of_column(column)
            .map_err(|e| Unsupported(e.to_string()))?;
        if index < groups {
            keys.push(name);
            continue;
        }
        let merge = merge_rule(&aggregate.aggr_expr[index - groups])
            .map_err(|why| Unsupported(format!("output column '{name}': {why}")))?;
        values.push((name, merge));
    }
    if keys.len() != groups {
        return Err(Unsupported::new(
            "select every GROUP BY column: they are the key of the result",
        ));
    }
    Ok(Shape::Aggregate { keys, values })
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

fn merge_rule(e: &Expr) -> Result<Merge, Unsupported> {
    let Expr::AggregateFunction(f) = unalias(e) else {
        return Err(Unsupported(format!("{e} is not an aggregate function")));
    };
    if f.params.distinct {
        return Err(Unsupported::new(
            "DISTINCT aggregates cannot be merged across micro-batches; drop DISTINCT",
        ));
    }
    match f.func.name() {
        "count" | "sum" => Ok(Merge::Sum),
        "min" => Ok(Merge::Min),
        "max" => Ok(Merge::Max),
        other => Err(Unsupported(format!(
            "{other}() cannot be merged across micro-batches; use count, sum, min or max \
             (an average is sum / count, computed by the reader)"
        ))),
    }
}

fn contains_aggregate(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Aggregate(_)) || plan.inputs().into_iter().any(contains_aggregate)
}

fn unsupported(plan: &LogicalPlan) -> Unsupported {
    let top = plan.display().to_string();
    Unsupported(format!(
        "the aggregate must be the outermost step of the query (SELECT ... GROUP BY, \
         without HAVING or an outer query); found {top} above it"
    ))
}
