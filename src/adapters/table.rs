//! The reader every adapter uses for its vendor tables (`adapters/<vendor>/*.tsv`, compiled in):
//! tab-separated rows, `#` comments and blank lines skipped, cells trimmed, and errors that name the
//! file and the line. Each adapter parses its tables once into its own types; `check_all` (start-up
//! and `check-config`) parses every adapter's tables, so a bad row fails the boot with the file and
//! line instead of the first device message.

use std::fmt;

/// A table row that does not fit: which file, which line, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table} line {line}: {message}")]
pub struct TableError {
    /// The table's path under the repository (`adapters/goe/mapping.tsv`).
    pub(crate) table: &'static str,
    /// 1-based line number in the file.
    pub(crate) line: usize,
    /// What is wrong and, where it helps, what is allowed.
    pub(crate) message: String,
}

/// One data row of a table.
#[derive(Clone)]
pub(crate) struct Row {
    /// The table it came from (for errors).
    table: &'static str,
    /// 1-based line number (for errors).
    line: usize,
    /// The trimmed cells.
    cells: Vec<&'static str>,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} {:?}", self.table, self.line, self.cells)
    }
}

impl Row {
    /// The cells, exactly `N` of them.
    pub(crate) fn cells<const N: usize>(&self) -> Result<[&'static str; N], TableError> {
        <[&'static str; N]>::try_from(self.cells.as_slice())
            .map_err(|_| self.error(format!("expected {N} tab-separated columns, found {}", self.cells.len())))
    }

    /// An error about this row.
    pub(crate) fn error(&self, message: impl Into<String>) -> TableError {
        TableError { table: self.table, line: self.line, message: message.into() }
    }

    /// Parses cell `value` as `T`, naming the column on failure.
    pub(crate) fn parse<T: std::str::FromStr>(&self, column: &str, value: &str) -> Result<T, TableError> {
        value.parse().map_err(|_| self.error(format!("column `{column}`: `{value}` is not a valid value")))
    }
}

/// Defines the adapter's `tables()` (parsed once, for the hot path) and `try_tables()` (for
/// [`crate::adapters::check_tables`] at start-up) from its `$parse` function. Since start-up parses
/// every table, `tables()` cannot fail once the bridge runs.
macro_rules! parsed_once {
    ($ty:ty, $parse:path) => {
        /// The tables, parsed once ([`crate::adapters::check_tables`] parses them at start-up, so a
        /// bad row stops the boot with its file and line and this never fails afterwards).
        pub(crate) fn tables() -> &'static $ty {
            try_tables().unwrap_or_else(|e| panic!("{e}"))
        }

        /// The tables, or the first row that does not fit.
        pub(crate) fn try_tables() -> Result<&'static $ty, &'static $crate::adapters::table::TableError> {
            static T: std::sync::OnceLock<Result<$ty, $crate::adapters::table::TableError>> =
                std::sync::OnceLock::new();
            T.get_or_init($parse).as_ref()
        }
    };
}
pub(crate) use parsed_once;

/// The data rows of `text` (the contents of `table`).
pub(crate) fn rows(table: &'static str, text: &'static str) -> impl Iterator<Item = Row> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(move |(i, l)| Row { table, line: i + 1, cells: l.split('\t').map(str::trim).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "# a comment\n\nkey\tvalue\n  # indented comment\nshort\nnum\tx1\n";

    #[test]
    fn rows_skip_comments_and_blank_lines_and_keep_real_line_numbers() {
        let r: Vec<Row> = rows("t.tsv", T).collect();
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 5, 6]);
        assert_eq!(r[0].cells::<2>().unwrap(), ["key", "value"]);
    }

    #[test]
    fn a_row_with_the_wrong_number_of_columns_names_file_line_and_counts() {
        let r: Vec<Row> = rows("adapters/x/t.tsv", T).collect();
        let e = r[1].cells::<2>().unwrap_err();
        assert_eq!(e.to_string(), "adapters/x/t.tsv line 5: expected 2 tab-separated columns, found 1");
    }

    #[test]
    fn every_adapters_tables_parse_as_the_start_up_check_does() {
        crate::adapters::check_tables().expect("the vendor tables of this build");
    }

    #[test]
    fn a_cell_that_does_not_parse_names_its_column() {
        let r: Vec<Row> = rows("t.tsv", T).collect();
        let [_, v] = r[2].cells::<2>().unwrap();
        let e = r[2].parse::<f64>("factor", v).unwrap_err();
        assert_eq!(e.to_string(), "t.tsv line 6: column `factor`: `x1` is not a valid value");
    }
}
