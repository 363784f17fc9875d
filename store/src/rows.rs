//! Column builders for the tables: parsers, detectors and generators append typed rows and take Arrow batches out.

use std::sync::Arc;

use crate::schema::TIME_ZONE;
use crate::Table;
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Int32Type};

/// One column under construction.
enum Column {
    Time(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Dictionary(StringDictionaryBuilder<Int32Type>),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Binary(BinaryBuilder),
}

impl Column {
    fn for_type(data_type: &DataType) -> Column {
        match data_type {
            DataType::Timestamp(_, _) => Column::Time(TimestampMicrosecondBuilder::new()),
            DataType::Utf8 => Column::Text(StringBuilder::new()),
            DataType::Dictionary(_, _) => Column::Dictionary(StringDictionaryBuilder::new()),
            DataType::Int64 => Column::Int(Int64Builder::new()),
            DataType::Float64 => Column::Float(Float64Builder::new()),
            DataType::Boolean => Column::Bool(BooleanBuilder::new()),
            DataType::Binary => Column::Binary(BinaryBuilder::new()),
            other => panic!("bug: no builder for column type {other} in a store schema"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Time(b) => Arc::new(b.finish().with_timezone(TIME_ZONE)),
            Column::Text(b) => Arc::new(b.finish()),
            Column::Dictionary(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Time(b) => b.len(),
            Column::Text(b) => b.len(),
            Column::Dictionary(b) => b.len(),
            Column::Int(b) => b.len(),
            Column::Float(b) => b.len(),
            Column::Bool(b) => b.len(),
            Column::Binary(b) => b.len(),
        }
    }
}

/// A value for one cell. `None` in any variant is a null.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Time(Option<i64>),
    Text(Option<&'a str>),
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
    Binary(Option<&'a [u8]>),
}

/// Rows of one table being built. Cells are appended in schema order, one row at a time, through
/// `push`; a row is complete when every column has a value.
pub struct TableBuilder {
    table: Table,
    columns: Vec<Column>,
    rows: usize,
    bytes: usize,
}

impl TableBuilder {
    pub fn new(table: Table) -> Self {
        let columns = table.schema().fields().iter().map(|f| Column::for_type(f.data_type())).collect();
        TableBuilder { table, columns, rows: 0, bytes: 0 }
    }

    pub fn table(&self) -> Table {
        self.table
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes of text and binary appended since the last `finish`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends one row. `cells` must follow the table's schema order and types.
    ///
    /// # Panics
    /// On a cell count or type that does not match the schema: that is a bug in the calling parser.
    pub fn push(&mut self, cells: &[Value<'_>]) {
        assert_eq!(cells.len(), self.columns.len(), "row for {} has the wrong number of cells", self.table);
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            match (column, cell) {
                (Column::Time(b), Value::Time(v)) => b.append_option(*v),
                (Column::Text(b), Value::Text(v)) => {
                    self.bytes += v.map_or(0, str::len);
                    b.append_option(*v)
                }
                (Column::Dictionary(b), Value::Text(v)) => match v {
                    Some(v) => {
                        b.append_value(v);
                    }
                    None => b.append_null(),
                },
                (Column::Int(b), Value::Int(v)) => b.append_option(*v),
                (Column::Float(b), Value::Float(v)) => b.append_option(*v),
                (Column::Bool(b), Value::Bool(v)) => b.append_option(*v),
                (Column::Binary(b), Value::Binary(v)) => {
                    self.bytes += v.map_or(0, <[u8]>::len);
                    b.append_option(*v)
                }
                (_, cell) => panic!("bug: cell {cell:?} does not fit its column in table {}", self.table),
            }
        }
        self.rows += 1;
        debug_assert!(self.columns.iter().all(|c| c.len() == self.rows));
    }

    /// Takes the rows built so far as a batch, or `None` when there are none.
    pub fn finish(&mut self) -> Option<RecordBatch> {
        if self.rows == 0 {
            return None;
        }
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        Some(RecordBatch::try_new(self.table.schema(), columns).expect("builders follow the table schema"))
    }
}

/// Truncates text to at most `max_bytes`, on a character boundary.
pub fn bounded(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
