"""A real grpcio bookstore server for the transcoder tests, built from the descriptor set at run
time (no generated ``_pb2`` modules): unary and server-streaming methods, nested and repeated
fields, enums, well-known types and ``google.api.HttpBody``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTOS = Path(__file__).parent / "protos"


def build_descriptor_set(out: Path) -> Path:
    """``protoc --include_imports --descriptor_set_out`` via grpcio-tools."""
    import grpc_tools

    well_known = Path(os.path.dirname(grpc_tools.__file__)) / "_proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{well_known}", "--include_imports",
         f"--descriptor_set_out={out}", str(PROTOS / "bookstore.proto")],
        check=True,
    )  # fmt: skip
    return out


class _Messages:
    def __init__(self, descriptor_set: bytes) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        self.pool = descriptor_pool.DescriptorPool()
        for f in files.file:
            self.pool.Add(f)
        self.service = self.pool.FindServiceByName("bookstore.Bookstore")
        # Every class held for the process: upb would otherwise collect a class with its last
        # instance and re-create it per call (see envoykit_filters/_transcoder/rules.py).
        self.classes = {
            d.full_name: message_factory.GetMessageClass(d)
            for f in files.file
            for d in _all_messages(self.pool.FindFileByName(f.name).message_types_by_name.values())
        }

    def cls(self, name: str) -> Any:
        return self.classes[name]


def _all_messages(messages: Any) -> list[Any]:
    out = []
    for d in messages:
        out.append(d)
        out.extend(_all_messages(d.nested_types))
    return out


_MESSAGES: dict[bytes, _Messages] = {}


def messages_for(descriptor_set: bytes) -> _Messages:
    """One pool per descriptor set for the whole process (pools are never dropped: upb has
    crashed collecting one while other threads used protobuf)."""
    if descriptor_set not in _MESSAGES:
        _MESSAGES[descriptor_set] = _Messages(descriptor_set)
    return _MESSAGES[descriptor_set]


def _book(m: _Messages, shelf: int, book: int) -> Any:
    b = m.cls("bookstore.Book")()
    b.id = book
    b.title = f"Book {book} on shelf {shelf}"
    b.author.name = "Ada"
    b.author.birth_year = 1815
    b.tags.extend(["classic", "math"])
    b.genre = 2
    b.published.FromJsonString("2020-01-02T03:04:05Z")
    b.read_time.FromJsonString("3600.5s")
    b.rating.value = 5
    b.extra.update({"pages": 300, "signed": True, "notes": None, "isbn": "x-1"})
    b.price = 12.5
    b.labels["lang"] = "en"
    return b


class Bookstore:
    """Method implementations, keyed by method name."""

    def __init__(self, m: _Messages) -> None:
        self.m = m

    def ListBooks(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        out = self.m.cls("bookstore.ListBooksResponse")()
        for i in range(1, 3):
            b = _book(self.m, req.shelf, i)
            b.tags[:] = list(req.tags) or list(b.tags)
            b.genre = req.genre or b.genre
            if req.author.name:
                b.author.name = req.author.name
            b.in_stock = req.in_stock
            out.books.append(b)
        out.total = req.page_size or len(out.books)
        return out

    SearchShelf = ListBooks

    def GetBook(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        if req.book == 404:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"book {req.book} not found")
        return _book(self.m, req.shelf, req.book)

    def GetBookPage(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        page = self.m.cls("bookstore.BookPage")()
        page.book = req.book
        page.page.content_type = "text/markdown"
        page.page.data = f"# Book {req.book}\n".encode()
        return page

    def CreateBook(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        b = self.m.cls("bookstore.Book")()
        b.CopyFrom(req.book)
        b.id = b.id or 1000 + req.shelf
        return b

    def UpdateBook(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        b = self.m.cls("bookstore.Book")()
        b.CopyFrom(req.book)
        b.labels["shelf"] = str(req.shelf)
        return b

    def DeleteBook(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        return self.m.cls("google.protobuf.Empty")()

    def CreateShelf(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        return req

    def GetShelf(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        s = self.m.cls("bookstore.Shelf")()
        s.name, s.theme, s.id = req.name, "any", 7
        return s

    def GetFile(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        body = self.m.cls("google.api.HttpBody")()
        body.content_type = "text/plain; charset=utf-8" if req.format != "html" else "text/html"
        body.data = f"file {req.path}\n".encode()
        return body

    def Upload(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        b = self.m.cls("bookstore.Book")()
        b.title = req.name
        b.tags.extend([req.body.content_type, req.body.data.decode("utf-8", "replace")])
        return b

    def StreamBooks(self, req: Any, ctx: grpc.ServicerContext) -> Iterator[Any]:
        for i in range(1, (req.page_size or 3) + 1):
            yield _book(self.m, req.shelf, i)

    def BulkCreate(self, requests: Iterator[Any], ctx: grpc.ServicerContext) -> Any:
        out = self.m.cls("bookstore.ListBooksResponse")()
        for req in requests:
            b = out.books.add()
            b.CopyFrom(req.book)
            b.labels["shelf"] = str(req.shelf)
        out.total = len(out.books)
        return out

    def Chat(self, requests: Iterator[Any], ctx: grpc.ServicerContext) -> Iterator[Any]:
        for req in requests:
            b = self.m.cls("bookstore.Book")()
            b.CopyFrom(req.book)
            b.labels["shelf"] = str(req.shelf)
            yield b

    def Fail(self, req: Any, ctx: grpc.ServicerContext) -> Any:
        if req.headers_first:
            ctx.send_initial_metadata(())
        if req.rich:
            status = self.m.cls("google.rpc.Status")(code=req.code, message=f"rich: {req.message}")
            status.details.add().Pack(self.m.cls("bookstore.Author")(name="detail", birth_year=1))
            ctx.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        ctx.abort(grpc.StatusCode(_code(req.code)), req.message)

    def StreamFail(self, req: Any, ctx: grpc.ServicerContext) -> Iterator[Any]:
        for i in range(req.after):
            yield _book(self.m, 0, i + 1)
        ctx.abort(grpc.StatusCode(_code(req.code)), req.message)


def _code(value: int) -> tuple[int, str]:
    return next(c.value for c in grpc.StatusCode if c.value[0] == value)


def serve(descriptor_set: bytes, address: str = "127.0.0.1:0") -> tuple[grpc.Server, int]:
    """Start the bookstore; returns the server and its port."""
    m = messages_for(descriptor_set)
    impl = Bookstore(m)
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in m.service.methods:
        req_cls = message_factory.GetMessageClass(method.input_type)
        fn: Callable[..., Any] = getattr(impl, method.name)
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(fn, request_deserializer=req_cls.FromString,
                                     response_serializer=lambda msg: msg.SerializeToString())  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(m.service.full_name, handlers),))
    port = server.add_insecure_port(address)
    server.start()
    return server, port


if __name__ == "__main__":  # python -m tests.transcoder.bookstore.server DESCRIPTOR_SET
    grpc_server, bound = serve(Path(sys.argv[1]).read_bytes())
    print(f"ready {bound}", flush=True)
    grpc_server.wait_for_termination()
