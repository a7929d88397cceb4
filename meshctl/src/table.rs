//! A tiny column aligner for kubectl-style tables: a header row, every
//! column as wide as its widest cell, three spaces between columns and no
//! trailing whitespace.

/// Rows of cells under a header; [`Table::render`] aligns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

const GAP: &str = "   ";

// === impl Table ===

impl Table {
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; a short row is padded with empty cells, a long one keeps
    /// its extra cells (the caller's bug shows instead of being hidden).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The aligned text, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for cells in self.lines() {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for cells in self.lines() {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn lines(&self) -> impl Iterator<Item = &Vec<String>> {
        std::iter::once(&self.header).chain(&self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_to_the_widest_cell() {
        let mut table = Table::new(["NAME", "ADDRESS", "HEALTHY"]);
        table.row(vec!["backend-v1".into(), "10.20.1.4".into(), "true".into()]);
        table.row(vec!["db".into(), "".into(), "false".into()]);
        assert_eq!(
            table.render(),
            "NAME         ADDRESS     HEALTHY\n\
             backend-v1   10.20.1.4   true\n\
             db                       false\n"
        );
    }

    #[test]
    fn header_only_and_ragged_rows() {
        assert_eq!(Table::new(["A", "B"]).render(), "A   B\n");
        let mut table = Table::new(["A", "B"]);
        table.row(vec!["x".into()]);
        table.row(vec!["x".into(), "y".into(), "z".into()]);
        assert_eq!(table.render(), "A   B\nx\nx   y   z\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut table = Table::new(["N", "X"]);
        table.row(vec!["é".into(), "1".into()]);
        assert_eq!(table.render(), "N   X\né   1\n");
    }
}
