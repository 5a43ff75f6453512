//! A table's columns as the Hive type names Glue stores (and Athena, EMR and Spark read).

use deltalake::arrow::datatypes::{DataType, Field, Schema};

/// (name, Hive type) of every column, in order.
pub fn hive_columns(schema: &Schema) -> Vec<(String, String)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), hive_type(f.data_type())))
        .collect()
}

fn hive_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::List(item) | DataType::LargeList(item) => {
            format!("array<{}>", hive_type(item.data_type()))
        }
        DataType::Struct(fields) => {
            let members: Vec<String> = fields.iter().map(|f| member(f)).collect();
            format!("struct<{}>", members.join(","))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "map<{},{}>",
                hive_type(kv[0].data_type()),
                hive_type(kv[1].data_type())
            ),
            _ => "string".into(),
        },
        // Strings, and anything a Delta table stores as one.
        _ => "string".into(),
    }
}

fn member(f: &Field) -> String {
    format!("{}:{}", f.name(), hive_type(f.data_type()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::datatypes::{Fields, TimeUnit};

    use super::*;

    #[test]
    fn nested_and_logical_types_get_their_hive_names() {
        let unit = Fields::from(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new(
                "crew",
                DataType::List(Arc::new(Field::new("element", DataType::Int64, true))),
                true,
            ),
        ]);
        let schema = Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("unit", DataType::Struct(unit), true),
            Field::new("day", DataType::Date32, false),
        ]);
        let got: Vec<String> = hive_columns(&schema)
            .into_iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect();
        assert_eq!(
            got,
            [
                "n bigint",
                "at timestamp",
                "price decimal(10,2)",
                "unit struct<id:string,crew:array<bigint>>",
                "day date"
            ]
        );
    }
}
