"""A recursive-descent (precedence-climbing) parser from tokens to statements.

Grammar, loosest binding first::

    formula   := statement (";" statement)* [";"]      -- a line break also ends a complete statement
    statement := NAME "=" expr | expr | <empty>
    expr      := or ["?" expr ":" expr]                 -- right-associative
    or        := and ("||" and)*
    and       := eq ("&&" eq)*
    eq        := rel (("==" | "!=") rel)*
    rel       := add (("<" | "<=" | ">" | ">=") add)*
    add       := mul (("+" | "-") mul)*
    mul       := unary (("*" | "/") unary)*
    unary     := ("-" | "!") unary | postfix
    postfix   := primary ("." NAME ["(" args ")"])*
    primary   := NUMBER | STRING | NAME | NAME "(" args ")" | "(" expr ")"
"""

from __future__ import annotations

from shoal.domain.batch.autoscale import syntax as sx
from shoal.domain.batch.autoscale.errors import SYNTAX_ERROR, FormulaError, located
from shoal.domain.batch.autoscale.lexer import Kind, Token, tokenize

MAX_STATEMENTS = 100  # Azure: "can include up to 100 statements"
MAX_DEPTH = 64  # nesting of parentheses, calls, unary operators and ?: (keeps every recursion shallow)

TERNARY = 1
LEVELS = {"||": 2, "&&": 3, "==": 4, "!=": 4, "<": 5, "<=": 5, ">": 5, ">=": 5, "+": 6, "-": 6, "*": 7, "/": 7}


def parse_statements(text: str) -> tuple[sx.Statement, ...]:
    return _Parser(text).formula()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # --- helpers --------------------------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek_op(self, offset: int = 0) -> str | None:
        t = self.tokens[min(self.i + offset, len(self.tokens) - 1)]
        return t.text if t.kind is Kind.OP else None

    def advance(self) -> Token:
        t = self.tokens[self.i]
        if t.kind is not Kind.END:
            self.i += 1
        return t

    def fail(self, detail: str, at: int | None = None) -> FormulaError:
        return located(SYNTAX_ERROR, self.text, self.tok.pos if at is None else at, detail)

    def expect(self, op: str, context: str) -> Token:
        if self.peek_op() != op:
            raise self.fail(f"expected '{op}' {context}, found {self.tok.describe()}")
        return self.advance()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"the expression is nested too deeply (more than {MAX_DEPTH} levels)")

    # --- statements -----------------------------------------------------------------------------------------
    def formula(self) -> tuple[sx.Statement, ...]:
        statements: list[sx.Statement] = []
        while self.tok.kind is not Kind.END:
            if self.peek_op() == ";":
                self.advance()
                continue
            if len(statements) == MAX_STATEMENTS:
                raise self.fail(f"a formula may have at most {MAX_STATEMENTS} statements")
            statements.append(self.statement())
            if self.peek_op() == ";":
                self.advance()
            elif self.tok.kind is not Kind.END and not self.tok.newline_before:
                raise self.fail(f"expected ';' or a line break after the statement, found {self.tok.describe()}")
        if not statements:
            raise self.fail("the formula has no statements")
        return tuple(statements)

    def statement(self) -> sx.Statement:
        t = self.tok
        if t.kind is Kind.NAME and self.peek_op(1) == "=":
            self.advance()
            self.advance()
            return sx.Assign(t.pos, t.text, self.expr())
        if t.kind is Kind.OP and t.text == "=":
            raise self.fail("expected a variable name before '='")
        return sx.Evaluate(t.pos, self.expr())

    # --- expressions ----------------------------------------------------------------------------------------
    def expr(self, level: int = TERNARY) -> sx.Expr:
        self.enter()
        left = self.unary()
        while True:
            op = self.peek_op()
            if op == "?" and level <= TERNARY:
                self.advance()
                then = self.expr()
                self.expect(":", "in 'condition ? value : value'")
                left = sx.Ternary(_pos(left), left, then, self.expr())
                break
            chain_level = LEVELS.get(op or "")
            if chain_level is None or chain_level < level:
                break
            ops: list[str] = []
            positions: list[int] = []
            operands = [left]
            while (op := self.peek_op()) is not None and LEVELS.get(op) == chain_level:
                positions.append(self.advance().pos)
                ops.append(op)
                operands.append(self.expr(chain_level + 1))
            left = sx.Chain(_pos(left), tuple(ops), tuple(positions), tuple(operands))
        self.depth -= 1
        return left

    def unary(self) -> sx.Expr:
        op = self.peek_op()
        if op in ("-", "!"):
            t = self.advance()
            self.enter()
            operand = self.unary()
            self.depth -= 1
            return sx.Unary(t.pos, t.text, operand)
        return self.postfix()

    def postfix(self) -> sx.Expr:
        node = self.primary()
        entered = 0
        while self.peek_op() == ".":
            self.advance()
            self.enter()
            entered += 1
            name = self.tok
            if name.kind is not Kind.NAME or name.text.startswith("$"):
                raise self.fail(f"expected a member name after '.', found {name.describe()}")
            self.advance()
            if self.peek_op() == "(":
                node = sx.Method(_pos(node), node, name.text, name.pos, self.arguments(name.text))
            else:
                node = sx.Field(_pos(node), node, name.text, name.pos)
        self.depth -= entered
        return node

    def arguments(self, callee: str) -> tuple[sx.Expr, ...]:
        self.expect("(", f"after '{callee}'")
        args: list[sx.Expr] = []
        if self.peek_op() != ")":
            args.append(self.expr())
            while self.peek_op() == ",":
                self.advance()
                args.append(self.expr())
        self.expect(")", f"to close the arguments of '{callee}'")
        return tuple(args)

    def primary(self) -> sx.Expr:
        t = self.tok
        if t.kind is Kind.NUMBER:
            self.advance()
            return sx.Number(t.pos, t.number)
        if t.kind is Kind.STRING:
            self.advance()
            return sx.String(t.pos, t.string)
        if t.kind is Kind.NAME:
            self.advance()
            if self.peek_op() == "(":
                if t.text.startswith("$"):
                    raise self.fail(f"'{t.text}' is a variable, not a function", at=t.pos)
                return sx.Call(t.pos, t.text, self.arguments(t.text))
            return sx.Name(t.pos, t.text)
        if self.peek_op() == "(":
            self.advance()
            inner = self.expr()
            self.expect(")", "to close '('")
            return inner
        raise self.fail(f"expected a value, found {t.describe()}")


def _pos(node: sx.Expr) -> int:
    return node.pos
