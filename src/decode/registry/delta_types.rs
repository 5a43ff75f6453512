//! Arrow as a schema format decodes it -> the types a Delta table holds. Delta has no
//! union, dictionary, fixed-size binary, time-of-day or interval type: unions become a
//! struct with a nullable field per branch, enums strings, uuids their text, other fixed
//! bytes binary, times their integer (Spark's mapping), timestamps microseconds.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, ListArray, MapArray, StringArray, StructArray,
    UInt32Array, UnionArray,
};
use deltalake::arrow::buffer::NullBuffer;
use deltalake::arrow::compute::{cast, take};
use deltalake::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, TimeUnit, UnionFields, UnionMode,
};
use deltalake::arrow::error::ArrowError;

/// The Delta-compatible field for `field` (metadata dropped, nullable).
pub(super) fn field(field: &Field) -> Field {
    Field::new(field.name(), data_type(field), true)
}

fn is_uuid(field: &Field) -> bool {
    field.metadata().get("logicalType").map(String::as_str) == Some("uuid")
}

fn data_type(of: &Field) -> DataType {
    match of.data_type() {
        DataType::Dictionary(_, _) | DataType::Null | DataType::Interval(_) => DataType::Utf8,
        DataType::FixedSizeBinary(16) if is_uuid(of) => DataType::Utf8,
        DataType::FixedSizeBinary(_) | DataType::LargeBinary | DataType::BinaryView => {
            DataType::Binary
        }
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Time32(_) => DataType::Int32,
        DataType::Time64(_) | DataType::Duration(_) => DataType::Int64,
        DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        // Local (zone-less) timestamps too: a timestamp_ntz column needs reader version 3,
        // which Direct Lake cannot read; the wall clock is kept, read as UTC.
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Struct(fields) => DataType::Struct(struct_fields(fields)),
        DataType::Union(fields, _) => DataType::Struct(
            fields
                .iter()
                .filter(|(_, f)| f.data_type() != &DataType::Null)
                .map(|(_, f)| Arc::new(field(f)))
                .collect(),
        ),
        // Named as Delta's readers name them, or a batch would not match its own table.
        DataType::List(item) | DataType::LargeList(item) => {
            DataType::List(Arc::new(field(item).with_name("element")))
        }
        DataType::Map(entries, sorted) => DataType::Map(map_entries(entries), *sorted),
        other => other.clone(),
    }
}

fn struct_fields(fields: &Fields) -> Fields {
    fields.iter().map(|f| Arc::new(field(f))).collect()
}

/// Map keys stay non-null, as Delta requires.
fn map_entries(entries: &FieldRef) -> FieldRef {
    let DataType::Struct(kv) = entries.data_type() else {
        return entries.clone();
    };
    let mut fields: Vec<Field> = kv.iter().map(|f| field(f)).collect();
    for (f, name) in fields.iter_mut().zip(["key", "value"]) {
        *f = f.clone().with_name(name);
    }
    if let Some(key) = fields.first_mut() {
        *key = key.clone().with_nullable(false);
    }
    Arc::new(Field::new(
        "key_value",
        DataType::Struct(fields.into()),
        false,
    ))
}

/// `array` (of `field`) as [`field`]'s type.
pub(super) fn array(array: &ArrayRef, field: &Field) -> Result<ArrayRef, ArrowError> {
    let target = data_type(field);
    if array.data_type() == &target && !matches!(target, DataType::Struct(_) | DataType::List(_)) {
        return Ok(array.clone());
    }
    match (array.data_type(), &target) {
        (DataType::FixedSizeBinary(16), DataType::Utf8) => Ok(uuid_text(array)),
        (DataType::Struct(fields), DataType::Struct(targets)) => {
            let s = array.as_struct();
            let columns = s
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(c, f)| self::array(c, f))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(
                targets.clone(),
                columns,
                s.nulls().cloned(),
            )?))
        }
        (DataType::Union(fields, mode), DataType::Struct(targets)) => {
            union_struct(array.as_union(), fields, *mode, targets)
        }
        (DataType::List(item), DataType::List(target_item)) => {
            let list = array.as_list::<i32>();
            let values = self::array(list.values(), item)?;
            Ok(Arc::new(ListArray::try_new(
                target_item.clone(),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        (DataType::Map(entries, _), DataType::Map(target_entries, sorted)) => {
            let map = array.as_map();
            let kv = self::array(&(Arc::new(map.entries().clone()) as ArrayRef), entries)?;
            let kv = kv.as_struct().clone();
            let kv = StructArray::try_new(
                match target_entries.data_type() {
                    DataType::Struct(f) => f.clone(),
                    _ => kv.fields().clone(),
                },
                kv.columns().to_vec(),
                None,
            )?;
            Ok(Arc::new(MapArray::try_new(
                target_entries.clone(),
                map.offsets().clone(),
                kv,
                map.nulls().cloned(),
                *sorted,
            )?))
        }
        _ => cast(array, &target),
    }
}

fn uuid_text(array: &ArrayRef) -> ArrayRef {
    let bytes = array
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.and_then(|b| uuid::Uuid::from_slice(b).ok())
                        .map(|u| u.to_string())
                })
                .collect::<StringArray>()
        })
        .unwrap_or_else(|| StringArray::new_null(array.len()));
    Arc::new(bytes)
}

/// A union as a struct: each row's branch in its field, the others null; a row whose
/// branch is `null` is a null struct.
fn union_struct(
    union: &UnionArray,
    branches: &UnionFields,
    mode: UnionMode,
    targets: &Fields,
) -> Result<ArrayRef, ArrowError> {
    let type_ids = union.type_ids();
    let mut columns = Vec::with_capacity(targets.len());
    let mut null_branch = None;
    for (id, branch) in branches.iter() {
        if branch.data_type() == &DataType::Null {
            null_branch = Some(id);
            continue;
        }
        let child = union.child(id);
        let indices: UInt32Array = (0..union.len())
            .map(|row| {
                (type_ids[row] == id).then(|| match mode {
                    UnionMode::Dense => union.value_offset(row) as u32,
                    UnionMode::Sparse => row as u32,
                })
            })
            .collect();
        columns.push(array(&take(child.as_ref(), &indices, None)?, branch)?);
    }
    let nulls = null_branch.map(|id| NullBuffer::from_iter(type_ids.iter().map(|&t| t != id)));
    Ok(Arc::new(StructArray::try_new(
        targets.clone(),
        columns,
        nulls,
    )?))
}
