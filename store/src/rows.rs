//! Column builders for the tables: parsers, detectors and generators append typed rows and take Arrow batches out.

use std::collections::HashMap;
use std::sync::Arc;

use crate::schema::TIME_ZONE;
use crate::Table;
use arrow::array::{
    ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, DictionaryArray, Float64Builder, Int32Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Int32Type};

/// One column under construction.
enum Column {
    Time(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Dictionary(DictionaryColumn),
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
            DataType::Dictionary(_, _) => Column::Dictionary(DictionaryColumn::default()),
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

    /// Makes the builder's buffers ready for a batch like `last` (the one it just finished): the next
    /// batch then fills them without growing, so without copying its values and faulting pages in again
    /// at each doubling.
    fn reserve_like(&mut self, last: &ArrayRef) {
        let rows = last.len();
        match self {
            Column::Time(b) => *b = TimestampMicrosecondBuilder::with_capacity(rows),
            Column::Text(b) => *b = StringBuilder::with_capacity(rows, last.as_string::<i32>().values().len()),
            Column::Dictionary(b) => b.keys = Int32Builder::with_capacity(rows),
            Column::Int(b) => *b = Int64Builder::with_capacity(rows),
            Column::Float(b) => *b = Float64Builder::with_capacity(rows),
            Column::Bool(b) => *b = BooleanBuilder::with_capacity(rows),
            Column::Binary(b) => *b = BinaryBuilder::with_capacity(rows, last.as_binary::<i32>().values().len()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Time(b) => b.len(),
            Column::Text(b) => b.len(),
            Column::Dictionary(b) => b.keys.len(),
            Column::Int(b) => b.len(),
            Column::Float(b) => b.len(),
            Column::Bool(b) => b.len(),
            Column::Binary(b) => b.len(),
        }
    }
}

/// A dictionary column of text. A row's dictionary values mostly repeat the row before's (the log
/// group, stream, function and source of one payload), so the last value's key is kept and reused
/// without hashing; other values are found in a map with a fast hash.
#[derive(Default)]
struct DictionaryColumn {
    keys: Int32Builder,
    values: StringBuilder,
    index: HashMap<Box<str>, i32, foldhash::fast::RandomState>,
    last: String,
    last_key: Option<i32>,
}

impl DictionaryColumn {
    fn append(&mut self, value: Option<&str>) {
        let Some(value) = value else { return self.keys.append_null() };
        if let Some(key) = self.last_key.filter(|_| self.last == value) {
            return self.keys.append_value(key);
        }
        let key = match self.index.get(value) {
            Some(key) => *key,
            None => {
                let key = i32::try_from(self.index.len()).expect("fewer than 2^31 distinct values in one batch");
                self.values.append_value(value);
                self.index.insert(value.into(), key);
                key
            }
        };
        self.last.clear();
        self.last.push_str(value);
        self.last_key = Some(key);
        self.keys.append_value(key);
    }

    fn finish(&mut self) -> DictionaryArray<Int32Type> {
        self.index.clear();
        self.last_key = None;
        DictionaryArray::try_new(self.keys.finish(), Arc::new(self.values.finish())).expect("every key indexes a value")
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
        for (column, cell) in cells.iter().enumerate() {
            self.push_cell(column, *cell);
        }
        self.end_row();
    }

    /// Appends the cell of `column` to the row being built; `end_row` ends it. Inlined into each row
    /// type's `push_to`, where every cell's kind is known, so that only the column's is matched.
    ///
    /// # Panics
    /// On a cell type that does not fit the column: that is a bug in the calling parser.
    #[inline(always)]
    pub fn push_cell(&mut self, column: usize, cell: Value<'_>) {
        match (&mut self.columns[column], cell) {
            (Column::Time(b), Value::Time(v)) => b.append_option(v),
            (Column::Text(b), Value::Text(v)) => {
                self.bytes += v.map_or(0, str::len);
                b.append_option(v)
            }
            (Column::Dictionary(b), Value::Text(v)) => b.append(v),
            (Column::Int(b), Value::Int(v)) => b.append_option(v),
            (Column::Float(b), Value::Float(v)) => b.append_option(v),
            (Column::Bool(b), Value::Bool(v)) => b.append_option(v),
            (Column::Binary(b), Value::Binary(v)) => {
                self.bytes += v.map_or(0, <[u8]>::len);
                b.append_option(v)
            }
            (_, cell) => panic!("bug: cell {cell:?} does not fit column {column} of table {}", self.table),
        }
    }

    /// Ends a row whose every cell `push_cell` appended.
    #[inline]
    pub fn end_row(&mut self) {
        self.rows += 1;
        debug_assert!(self.columns.iter().all(|c| c.len() == self.rows), "a row of {} lacks cells", self.table);
    }

    /// Takes the rows built so far as a batch, or `None` when there are none.
    pub fn finish(&mut self) -> Option<RecordBatch> {
        if self.rows == 0 {
            return None;
        }
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        for (column, array) in self.columns.iter_mut().zip(&columns) {
            column.reserve_like(array);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, StringDictionaryBuilder};

    /// The dictionary column's values, row by row, and each of its keys' indexes into its values.
    fn texts(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        let array = batch.column_by_name(column).unwrap().as_dictionary::<Int32Type>();
        let values = array.values().as_string::<i32>();
        assert!(array.keys().iter().flatten().all(|k| (k as usize) < values.len()), "every key indexes a value");
        (0..array.len())
            .map(|i| array.is_valid(i).then(|| values.value(array.keys().value(i) as usize).to_string()))
            .collect()
    }

    #[test]
    fn dictionary_columns_keep_every_value_in_runs_alternations_nulls_and_batch_after_batch() {
        // `level` is a dictionary column of `logs`.
        let level = Table::Logs.schema().index_of("level").unwrap();
        let batches: [&[Option<&str>]; 3] = [
            &[Some("INFO"), Some("INFO"), None, Some("ERROR"), Some("INFO"), Some("ERROR"), Some("ERROR"), None],
            // The next batch starts with the value the last one ended with, and then one new.
            &[Some("ERROR"), Some("WARN"), Some("ERROR"), Some("")],
            &[None, Some("DEBUG")],
        ];
        let mut builder = TableBuilder::new(Table::Logs);
        for values in batches {
            for value in values {
                let cells: Vec<Value> = Table::Logs
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, field)| match field.data_type() {
                        DataType::Timestamp(_, _) => Value::Time(Some(1)),
                        _ if i == level => Value::Text(*value),
                        DataType::Int64 => Value::Int(Some(1)),
                        DataType::Float64 => Value::Float(Some(1.0)),
                        DataType::Boolean => Value::Bool(Some(true)),
                        DataType::Binary => Value::Binary(Some(b"x")),
                        _ => Value::Text(Some("x")),
                    })
                    .collect();
                builder.push(&cells);
            }
            let batch = builder.finish().unwrap();
            let expected: Vec<Option<String>> = values.iter().map(|v| v.map(str::to_string)).collect();
            assert_eq!(texts(&batch, "level"), expected);
            // As Arrow's own dictionary builder makes it: each distinct value once.
            let mut arrow = StringDictionaryBuilder::<Int32Type>::new();
            values.iter().for_each(|v| arrow.append_option(*v));
            assert_eq!(batch.column(level).as_dictionary::<Int32Type>().values().len(), arrow.finish().values().len());
        }
    }
}
