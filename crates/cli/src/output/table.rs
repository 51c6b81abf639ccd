//! Tables as docker prints them: left-aligned columns separated by at least three spaces.

pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        render_rows(std::iter::once(&self.headers).chain(self.rows.iter()))
    }
}

/// Aligns rows of cells into columns (the last column is not padded).
pub fn render_rows<'a>(rows: impl Iterator<Item = &'a Vec<String>> + Clone) -> String {
    let columns = rows.clone().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows.clone() {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_three_spaces() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["abc".into(), "web".into()]);
        t.row(vec!["a".into(), "".into()]);
        assert_eq!(t.render(), "ID    NAME\nabc   web\na\n");
    }
}
