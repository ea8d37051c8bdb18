"""Reuters-21578 SGML -> one CSV row per document (newid, split, topics, text), as a user would."""
import csv, html, re, sys
from pathlib import Path

src, out, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
doc_re = re.compile(r"<REUTERS([^>]*)>(.*?)</REUTERS>", re.S)
with open(out, "w", newline="", encoding="utf-8") as fh:
    w = csv.writer(fh)
    w.writerow(["newid", "split", "topics", "text"])
    for f in (src / n for n in names):
        for attrs, body in doc_re.findall(f.read_text(encoding="latin-1")):
            split = re.search(r'LEWISSPLIT="([^"]+)"', attrs).group(1)
            if split == "NOT-USED":
                continue
            topics = re.findall(r"<D>(.*?)</D>", re.search(r"<TOPICS>(.*?)</TOPICS>", body, re.S).group(1))
            title = re.search(r"<TITLE>(.*?)</TITLE>", body, re.S)
            text = re.search(r"<BODY>(.*?)</BODY>", body, re.S)
            words = " ".join(html.unescape(m.group(1)) for m in (title, text) if m)
            words = re.sub(r"&#\d+;", " ", " ".join(words.split())).strip()
            if words:
                w.writerow([re.search(r'NEWID="(\d+)"', attrs).group(1), split, "|".join(topics), words])
