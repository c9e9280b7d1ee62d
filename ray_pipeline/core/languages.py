"""Programming-language and domain detection for seed instructions.

Two small tables drive language detection:

* :data:`NAMED` -- how an instruction *names* a language ("Write a Python
  function", "in Go", "a C++ program"). The earliest mention in the
  instruction wins.
* :data:`CODE_SIGNALS` -- what code in a language *looks like* (``def f():``,
  ``console.log(``, ``#include <iostream>``). Used only when the instruction
  names no language; each language scores the weights of the signals found in
  the input and output, and the best score wins (ties go to the earlier row).

Languages are reported by lowercase canonical names (``python``, ``cpp``,
``csharp``, ...); ``""`` means none was named or recognised.
"""

from __future__ import annotations

import re

# Case-sensitive by default; patterns that should ignore case say so with (?i:...).
_PREP = r"\b(?:in|using|with|into|written in|via)\s+"
_NOUNS = (
    r"(?:program|programs|code|function|functions|method|language|programming|script|snippet"
    r"|implementation|library|module|package|struct|compiler|routine|version|equivalent)\b"
)


def _lone(name: str) -> str:
    """A one-letter or common-word language name, in a clearly programming sense only."""
    end = r"(?![\w+#'-])"
    return rf"{_PREP}{name}{end}|\b{name}{end}\s+{_NOUNS}|\bto\s+{name}(?=\s*(?:[.,;:!?)]|$))"


NAMED: tuple[tuple[str, str], ...] = (
    ("python", r"(?i:\bpython[23]?\b|\b(?:django|flask|pandas|numpy|pytorch|tensorflow|keras|scikit-learn|sklearn)\b)"),
    ("typescript", r"(?i:\btypescript\b)"),
    ("javascript", r"(?i:\bjavascript\b|\bjs\b|\bnode\.?js\b|\bjquery\b|\becmascript\b|\bvue\.?js\b)|\bReact\b"),
    ("java", r"(?i:\bjava\b(?!\s*script))"),
    ("cpp", r"(?i:\bc\+\+|\bcpp\b)"),
    ("csharp", r"(?i:\bc#|\bc\s+sharp\b|\blinq\b)"),
    ("c", _lone("C") + r"|\bANSI C\b"),
    ("go", _lone("Go") + r"|(?i:\bgolang\b)"),
    ("rust", r"\bRust\b"),
    ("php", r"(?i:\bphp\b|\blaravel\b)"),
    ("swift", r"\bSwift(?:UI)?\b"),
    ("ruby", r"\bRuby\b|\bRails\b"),
    ("kotlin", r"(?i:\bkotlin\b)"),
    ("scala", r"\bScala\b"),
    ("sql", r"(?i:\b(?:sql|mysql|postgres(?:ql)?|sqlite|t-sql|pl/sql|tsql)\b)"),
    ("bash", r"(?i:\bbash\b|\bshell\s+(?:script|command)s?\b|\bzsh\b)"),
    ("r", _lone("R")),
    ("perl", r"\bPerl\b"),
    ("vb", r"(?i:\bvisual basic\b|\bvb(?:\.net|a)?\b)"),
    ("html", r"(?i:\bhtml5?\b)"),
    ("css", r"(?i:\bcss3?\b)"),
)

# (language, pattern, weight). Patterns are matched against input + output.
CODE_SIGNALS: tuple[tuple[str, str, int], ...] = (
    ("python", r"(?m)^\s*def \w+\(.*\)(?:\s*->\s*[^:]+)?:\s*(?:#.*)?$", 3),
    ("python", r"(?m)^\s*(?:from [\w.]+ )?import [\w.]+(?:\s+as\s+\w+)?(?:,\s*[\w.]+)*\s*$", 1),
    ("python", r"\bprint\(", 1),
    ("python", r"(?m)^\s*(?:if|elif|for|while|with|try|except|else)\b[^\n;{]*:\s*$", 2),
    ("python", r"\bself\.\w+|\b(?:elif|lambda \w*:|None\b|True\b|False\b)", 1),
    ("python", r"\b(?:len|range|enumerate|isinstance)\(", 1),
    ("python", r"\b(?:np|pd|plt|os|re|json|math|random)\.\w+\(", 2),
    ("python", r"(?m)^[a-z_]\w*\s*=\s*[\[{(][^;\n]*$", 1),
    ("typescript", r":\s*(?:string|number|boolean|void)\b(?:\[\])?\s*[,)=;{]", 2),
    ("typescript", r"\binterface \w+\s*\{|\btype \w+\s*=", 1),
    ("javascript", r"\bfunction\s*\w*\s*\([^)]*\)\s*\{", 2),
    ("javascript", r"\b(?:const|let|var) \w+\s*=", 1),
    ("javascript", r"=>|===|!==", 1),
    ("javascript", r"\bconsole\.log\(|\bdocument\.\w+|\bwindow\.\w+|\brequire\(|\bmodule\.exports\b", 2),
    ("java", r"\bpublic\s+static\s+void\s+main\s*\(\s*String", 3),
    ("java", r"\bSystem\.out\.print", 3),
    ("java", r"\b(?:public|private|protected)\s+(?:static\s+)?(?:final\s+)?[\w<>\[\]]+\s+\w+\s*[(;=]", 1),
    ("java", r"\bString\[\]|\bimport java\.|\bArrayList<|\bnew \w+\(", 1),
    ("cpp", r"#include\s*<(?!\w+\.h>)\w+>", 2),
    ("cpp", r"\bstd::|\bcout\s*<<|\bcin\s*>>|\busing namespace std\b", 3),
    ("cpp", r"\bvector<", 1),
    ("c", r"#include\s*<\w+\.h>", 2),
    ("c", r"\b(?:printf|scanf|malloc|free)\s*\(", 1),
    ("c", r"\bint\s+main\s*\(", 1),
    ("csharp", r"\bConsole\.Write(?:Line)?\(|\busing System\b|\bnamespace \w+", 3),
    ("csharp", r"\bstatic void Main\(|\bstring\[\]", 2),
    ("go", r"(?m)^package \w+|\bfmt\.\w+\(", 3),
    ("go", r"\bfunc \w+\([^)]*\)\s*(?:\(?[\w\[\]*, ]+\)?\s*)?\{", 1),
    ("go", r":=", 1),
    ("rust", r"\bfn \w+\s*(?:<[^>]*>)?\(", 2),
    ("rust", r"\blet mut\b|\bprintln!\(|\bimpl\b|\bVec<|&str\b|\bString::", 2),
    ("php", r"<\?php", 4),
    ("php", r"(?m)\$\w+\s*=[^=\n]*;|\$\w+->|\becho\s[^\n]*;\s*$", 1),
    ("swift", r"\bimport (?:UIKit|Foundation|SwiftUI)\b|\bguard let\b|\bif let\b", 3),
    ("swift", r"\bfunc \w+\([^)]*\w\s*:\s*\[?[A-Z]|\)\s*->\s*\[?[A-Z]\w*\]?\??\s*\{", 2),
    ("swift", r"\b(?:let|var) \w+\s*:\s*\[?[A-Z]\w*", 1),
    ("ruby", r"(?m)^\s*def \w+(?:\([^)]*\))?\s*$|\bputs\b|\.each do\b|\bdo \|\w+\|", 2),
    ("ruby", r"(?m)^\s*end\s*$", 1),
    ("kotlin", r"\bfun \w+\(", 3),
    ("kotlin", r"\bval \w+\s*=", 1),
    ("scala", r"\bobject \w+\s*(?:extends \w+\s*)?\{|\bdef \w+\([^)]*\)\s*:\s*\w+\s*=", 3),
    ("sql", r"\bSELECT\b[\s\S]+?\bFROM\b|(?i:\bselect\s+\*\s+from\b)", 3),
    ("sql", r"(?i:\b(?:insert\s+into|create\s+table|delete\s+from|alter\s+table|inner\s+join)\b)", 3),
    ("sql", r"\bUPDATE \w+\s+SET\b", 3),
    ("sql", r"\bWHERE\b|\bGROUP BY\b|\bORDER BY\b", 1),
    ("bash", r"(?m)^#!/(?:usr/)?bin/(?:env\s+)?(?:ba|z)?sh\b", 4),
    ("bash", r"(?m)^\s*(?:fi|done|esac)\s*$|\bthen\s*$|\$\(\w+|\b(?:grep|awk|sed|chmod|mkdir)\s+-?\w", 1),
    ("bash", r"(?m)^\s*echo\s[^;\n]*$|^\s*\w+=\S", 1),
    ("perl", r"(?m)\bmy [$@%]\w+|\buse strict;|^#!/usr/bin/(?:env )?perl\b", 4),
    ("vb", r"\bDim \w+ As\b|\bEnd (?:Sub|Function|Module)\b", 4),
    ("r", r"<-\s*(?:c|function|data\.frame|list|matrix)\(|\blibrary\(\w+\)|\bggplot\(", 3),
    ("html", r"(?i:<!doctype html|<html\b)", 3),
    ("html", r"<(?:body|div|p|h[1-6]|table|tr|td|form|ul|ol|li|a|span|button|input|head|title)\b[^>]*>", 1),
    ("css", r"\b(?:color|margin|padding|font-size|font-family|background-color|border|text-align)\s*:[^;{}\n]+;", 2),
)

# Names users may give for a language (case-insensitive) -> canonical name.
ALIASES: dict[str, str] = {
    "py": "python", "python3": "python", "js": "javascript", "node": "javascript",
    "nodejs": "javascript", "node.js": "javascript", "ts": "typescript", "c++": "cpp",
    "cplusplus": "cpp", "c#": "csharp", "cs": "csharp", "c-sharp": "csharp", "golang": "go",
    "rs": "rust", "rb": "ruby", "kt": "kotlin", "sh": "bash", "shell": "bash", "zsh": "bash",
    "postgresql": "sql", "mysql": "sql", "sqlite": "sql", "htm": "html",
    "pl": "perl", "visual basic": "vb", "vb.net": "vb", "vbnet": "vb",
}

# Programming vocabulary that makes an instruction a coding task even when no language shows.
CODE_TERMS = re.compile(
    r"(?i:\b(?:functions?|methods?|programs?|programming|code|coding|algorithms?|arrays?|implement\w*"
    r"|sql|regex|regular expressions?|variables?|loops?|recursion|recursive|compil\w+|debug\w*"
    r"|scripts?|apis?|json|xml|database|quer(?:y|ies)|linked lists?|binary (?:search )?trees?|hash ?(?:maps?|tables?)"
    r"|data structures?|object-oriented|threads?|concurren\w+|operating systems?|syntax|iterate"
    r"|sort(?:ing)? algorithm|stack overflow|big-?o"
    r"|class (?:called|named|for|that|to|with|which)|(?:given|the following|this) (?:list|string|dictionary))\b)"
)
# Word-problem vocabulary; a math seed also has to contain a number.
MATH_TERMS = re.compile(
    r"(?i:\bhow (?:many|much|long|far|old)\b|\bwhat is the (?:total|sum|product|value|difference|average|area)\b"
    r"|\bsolve\b|\bequations?\b|\bcalculate\b|\bpercent|%|\$\s?\d|\bprobability\b|\baverage\b|\bremainder\b"
    r"|\bsquare root\b|\bin total\b|\baltogether\b)"
)
_TRANSLATION = re.compile(r"(?i:\b(?:translate|convert|rewrite|port|transpile|migrate)\w*\b)")
_NUMBER = re.compile(r"\d")
_CODE_SHAPE = re.compile(r"(?m)[;{}]\s*$|^\s*(?:def|class|function|return|import|#include)\b")
_GSM8K_ANSWER = re.compile(r"(?m)^####\s*\S")

_NAMED_RES = tuple((lang, re.compile(pattern)) for lang, pattern in NAMED)
_SIGNAL_RES = tuple((lang, re.compile(pattern), weight) for lang, pattern, weight in CODE_SIGNALS)
KNOWN_LANGUAGES: frozenset[str] = frozenset(lang for lang, _ in NAMED)
EMBEDDED_LANGUAGES: frozenset[str] = frozenset({"sql", "html", "css"})


def canonical_language(name: str) -> str:
    """Map a user-given language name (``"C++"``, ``"JS"``, ``"Python"``) to its canonical form."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def named_language(text: str) -> str:
    """The language a text names explicitly, or ``""``.

    The earliest mention wins, except that a general-purpose language beats SQL/HTML/CSS
    ("a PHP script that queries MySQL"), and a translation ("convert this C code to
    Python", the verb before the first name) is about its last-named language, the one
    the answer is written in.
    """
    found = sorted(
        (match.start(), lang) for lang, regex in _NAMED_RES if (match := regex.search(text))
    )
    if not found:
        return ""
    if _TRANSLATION.search(text, 0, found[0][0]):
        return found[-1][1]
    general = [lang for _, lang in found if lang not in EMBEDDED_LANGUAGES]
    return general[0] if general else found[0][1]


def code_language(code: str) -> str:
    """The language some code looks like, by weighted signals, or ``""``."""
    scores: dict[str, int] = {}
    for lang, regex, weight in _SIGNAL_RES:
        if regex.search(code):
            scores[lang] = scores.get(lang, 0) + weight
    if not scores:
        return ""
    return max(scores, key=scores.__getitem__)  # first-inserted wins ties: table order


def detect_language(instruction: str, input: str = "", output: str = "") -> str:
    """The programming language of a seed: named in the instruction, else seen in its code."""
    return named_language(instruction) or code_language(f"{input}\n{output}")


def detect_domain(instruction: str, input: str = "", output: str = "", language: str | None = None) -> str:
    """``"code"``, ``"math"`` or ``"general"`` for one seed.

    ``language`` is the seed's detected language, if already known (saves a second detection).
    """
    if language is None:
        language = detect_language(instruction, input, output)
    if language:
        return "code"
    if _GSM8K_ANSWER.search(output):
        return "math"
    if CODE_TERMS.search(f"{instruction}\n{input}"):
        return "code"
    prompt = f"{instruction}\n{input}"
    if MATH_TERMS.search(prompt) and _NUMBER.search(prompt):
        return "math"
    if _CODE_SHAPE.search(f"{input}\n{output}"):
        return "code"
    return "general"


# MultiPL-E (the evaluation's language columns; also accepted by config validation)
#: MultiPL-E's language keys, in the papers' column order
MULTIPLE_LANGUAGES = ("java", "js", "cpp", "php", "swift", "rs")
#: names a user may write for a MultiPL-E language
LANGUAGE_ALIASES = {
    "java": "java",
    "js": "js", "javascript": "js",
    "cpp": "cpp", "c++": "cpp",
    "php": "php",
    "swift": "swift",
    "rs": "rs", "rust": "rs",
}
#: column titles of the summary table
LANGUAGE_TITLES = {"java": "Java", "js": "JavaScript", "cpp": "C++", "php": "PHP", "swift": "Swift", "rs": "Rust"}
