//! The few pieces of HTML the page is made of, and escaping. Every text that comes from a
//! file (names, reasons, reports) goes through [`escape`] before it joins the page.

use std::fmt::Write;
use std::path::Path;

/// Readable on a phone and a laptop: one column of at most 60 characters' width of prose,
/// pictures scaled to fit, wide tables scrolled sideways rather than squeezed.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem;\
line-height:1.45;color:#222}h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}\
img{max-width:100%;height:auto;display:block;margin:.5rem 0}audio{width:100%}\
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0}\
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}th{background:#f4f4f4}\
td:first-child,th:first-child{text-align:left}pre{overflow-x:auto;background:#f6f6f6;padding:.5rem}\
.note{color:#555;font-style:italic}code{font-size:.95em}";

/// `text` with the five characters that mean something in HTML replaced by entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link to the file `name` in the page's own folder: `./` and the name with every byte
/// but letters, digits and `-._~` percent-encoded. So a file named `javascript:….mid` is a
/// relative link to that file, never a scheme a browser would run, and no name can leave
/// the attribute.
pub fn href(name: &str) -> String {
    let mut out = String::from("./");
    for byte in name.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A page being built, top to bottom.
pub struct Page {
    title: String,
    body: String,
}

impl Page {
    pub fn new(title: &str) -> Self {
        Page { title: escape(title), body: format!("<h1>{}</h1>", escape(title)) }
    }

    /// A section heading; `html` is already escaped.
    pub fn heading(&mut self, html: &str) {
        let _ = write!(self.body, "<h2>{html}</h2>");
    }

    /// HTML that the caller built and escaped.
    pub fn raw(&mut self, html: &str) {
        self.body.push_str(html);
    }

    /// A table; `header` is plain text, the cells are already escaped.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        if rows.is_empty() {
            return;
        }
        self.body.push_str("<div class=\"scroll\"><table><tr>");
        for cell in header {
            let _ = write!(self.body, "<th>{}</th>", escape(cell));
        }
        self.body.push_str("</tr>");
        for row in rows {
            self.body.push_str("<tr>");
            for cell in row {
                let _ = write!(self.body, "<td>{cell}</td>");
            }
            self.body.push_str("</tr>");
        }
        self.body.push_str("</table></div>");
    }

    /// The picture `file` of `folder`, by its relative name, if it exists.
    pub fn picture(&mut self, folder: &Path, file: &str, description: &str) {
        if folder.join(file).is_file() {
            let _ = write!(self.body, "<img src=\"{}\" alt=\"{}\">", href(file), escape(description));
        }
    }

    /// The whole document.
    pub fn finish(self) -> String {
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><style>{STYLE}</style></head>\n<body>\n{}\n</body></html>\n",
            self.title, self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_and_percent_encoded_whatever_the_name() {
        assert_eq!(href("generated_music.mid"), "./generated_music.mid");
        assert_eq!(href("javascript:alert(1).mid"), "./javascript%3Aalert%281%29.mid");
        assert_eq!(href("a \"b\"<c>.wav"), "./a%20%22b%22%3Cc%3E.wav");
        assert_eq!(href("é.mid"), "./%C3%A9.mid");
    }

    #[test]
    fn markup_in_text_is_shown_not_run() {
        assert_eq!(
            escape("<a href=\"x\">it's & more</a>"),
            "&lt;a href=&quot;x&quot;&gt;it&#39;s &amp; more&lt;/a&gt;"
        );
    }

    #[test]
    fn empty_tables_and_missing_pictures_leave_nothing() {
        let mut page = Page::new("t");
        page.table(&["a"], &[]);
        page.picture(Path::new("/nonexistent"), "x.svg", "x");
        assert!(!page.finish().contains("<table"));
    }
}
