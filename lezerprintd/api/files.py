"""The file library: upload, list, read, download, rename or move, delete, and print."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from lezerprintd.api.envelope import ok, page_meta
from lezerprintd.api.jobs import iso, start_print, visible_to
from lezerprintd.api.jobs import record_view as job_view
from lezerprintd.api.spec import LIMIT, PAGE, Answer, Endpoint, Field, Kind, body, check, query
from lezerprintd.auth.middleware import principal_of
from lezerprintd.auth.permissions import Role
from lezerprintd.errors import UserError
from lezerprintd.files import names
from lezerprintd.files.kinds import FileType
from lezerprintd.files.library import Upload
from lezerprintd.store import accounts as account_rows
from lezerprintd.store import files as file_rows
from lezerprintd.store.files import SORTS, FileRecord

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

CHUNK_BYTES: Final = 256 * 1024
FORM_TEXT_BYTES: Final = 4096  # the most a text field of the upload form may hold
_ID: Final = Field("file_id", Kind.STRING, "The file's id", required=True, max_length=64)
_NAME: Final = Field(
    "name", Kind.STRING, "The name to show (the extension must match the file's type)",
    min_length=1, max_length=names.MAX_NAME_CHARACTERS,
)  # fmt: skip
_FOLDER: Final = Field(
    "folder", Kind.STRING, "Folder, as a/b/c; empty for the top",
    max_length=names.MAX_FOLDER_CHARACTERS,
)  # fmt: skip

FILE_SCHEMA: Final = {
    "type": "object",
    "required": ["id", "originalName", "fileType", "fileSize", "folder"],
    "properties": {
        "id": {"type": "string"},
        "originalName": {"type": "string"},
        "fileType": {"type": "string", "enum": [kind.value for kind in FileType]},
        "fileSize": {"type": "string", "pattern": "^[0-9]+$"},
        "folder": {"type": "string"},
    },
}


def file_view(record: FileRecord) -> dict[str, Any]:
    """A file as every answer shows it. `fileSize` is a string, as the seed's API sends it."""
    return {
        "id": record.id,
        "userId": record.user_id,
        "originalName": record.original_name,
        "fileName": record.file_name,
        "fileType": record.file_type,
        "fileSize": str(record.file_size),
        "folder": record.folder,
        "sha256": record.sha256,
        "printCount": record.print_count,
        "downloadUrl": f"/api/files/{record.id}/download",
        "thumbnailUrl": f"/api/files/{record.id}/thumbnail" if record.thumbnail else None,
        "metadata": record.metadata,
        "analysis": None
        if record.analysis_status is None
        else {"status": record.analysis_status, "error": record.analysis_error},
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
    }


def endpoints(appliance: Appliance) -> list[Endpoint]:
    list_fields = (
        PAGE,
        LIMIT,
        Field("type", Kind.STRING, "Only files of this type", choices=tuple(FileType.__members__)),
        Field("folder", Kind.STRING, "Only files in this folder ('' for the top)", max_length=200),
        Field("search", Kind.STRING, "Only names containing this", max_length=200),
        Field("sort", Kind.STRING, "Sort by", choices=tuple(SORTS), default="date"),
        Field("order", Kind.STRING, "Sort order", choices=("asc", "desc"), default="desc"),
    )
    form_fields = (
        Field("file", Kind.FILE, "The file: G-code, STL, OBJ or 3MF", required=True),
        _FOLDER,
        _NAME,
    )
    change_fields = (_NAME, _FOLDER)

    async def one(request: web.Request) -> FileRecord:
        file_id = request.match_info["file_id"]
        seen_by = visible_to(principal_of(request))
        found = None
        if len(file_id) <= 64:
            found = await file_rows.get(appliance.store, file_id, seen_by)
        if found is None:
            raise UserError("no such file", status=404, code="NOT_FOUND")
        return found

    async def handle_upload(request: web.Request) -> web.Response:
        if request.content_type != "multipart/form-data":
            raise UserError(
                "send the file as multipart/form-data, in the field 'file'",
                status=415,
                code="UNSUPPORTED_MEDIA_TYPE",
            )
        principal = principal_of(request)
        upload: Upload | None = None
        kept = False
        try:
            texts: dict[str, str] = {}
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise UserError("a form inside the form is not accepted")
                if part.name == "file":
                    if upload is not None:
                        raise UserError("one file per upload")
                    if not part.filename:
                        raise UserError(
                            "the file part has no file name",
                            details=[{"field": "file", "code": "name", "message": "give a name"}],
                        )
                    upload = await appliance.library.receive(
                        _chunks(part), part.filename, request.content_length
                    )
                elif part.name in ("folder", "name") and part.name not in texts:
                    texts[part.name] = await _text(part)
                else:
                    raise UserError(
                        f"invalid request: {part.name}",
                        details=[
                            {"field": str(part.name), "code": "unknown", "message": "not a field"}
                        ],
                    )
            if upload is None:
                raise UserError(
                    "invalid request: file",
                    details=[{"field": "file", "code": "required", "message": "is required"}],
                )
            values = check(change_fields, texts)
            record = await appliance.library.keep(
                upload,
                name=values["name"],
                folder=names.folder_path(values["folder"] or ""),
                owner=principal.user_id,
            )
            kept = True
        except (ValueError, HttpProcessingError) as error:  # aiohttp's words for a bad form
            why = error.message if isinstance(error, HttpProcessingError) else str(error)
            raise UserError(f"the upload is not a well-formed multipart form: {why}") from None
        finally:
            if upload is not None and not kept:
                upload.discard()
        return ok({"file": file_view(record)}, status=201)

    async def handle_list(request: web.Request) -> web.Response:
        values = query(request, list_fields)
        records, total = await file_rows.page(
            appliance.store,
            visible_to(principal_of(request)),
            page=values["page"],
            limit=values["limit"],
            file_type=values["type"],
            folder=None if values["folder"] is None else names.folder_path(values["folder"]),
            search=values["search"],
            sort=values["sort"],
            descending=values["order"] == "desc",
        )
        return ok(
            {"files": [file_view(record) for record in records]},
            meta=page_meta(values["page"], values["limit"], total),
        )

    async def handle_folders(request: web.Request) -> web.Response:
        found = await file_rows.folders(appliance.store, visible_to(principal_of(request)))
        return ok({"folders": found})

    async def handle_get(request: web.Request) -> web.Response:
        record = await one(request)
        owner = (
            await account_rows.user_by_id(appliance.store, record.user_id)
            if record.user_id
            else None
        )
        jobs = await file_rows.jobs_of(appliance.store, record.id, limit=20)
        view = file_view(record)
        view["user"] = None if owner is None else {"id": owner.id, "username": owner.username}
        view["_count"] = {"printJobs": await file_rows.count_jobs(appliance.store, record.id)}
        return ok({"file": view, "jobs": [job_view(job) for job in jobs]})

    async def handle_download(request: web.Request) -> web.StreamResponse:
        record = await one(request)
        path = appliance.library.path_of(record)
        quoted = urllib.parse.quote(record.original_name, safe="")
        ascii_name = record.original_name.encode("ascii", "replace").decode().replace('"', "'")
        return web.FileResponse(
            path,
            chunk_size=CHUNK_BYTES,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": (
                    f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"
                ),
            },
        )

    async def handle_thumbnail(request: web.Request) -> web.StreamResponse:
        record = await one(request)
        path = appliance.library.thumbnail_of(record)
        if path is None:
            raise UserError("the file has no thumbnail", status=404, code="NOT_FOUND")
        media = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        return web.FileResponse(
            path, headers={"Content-Type": media, "Cache-Control": "private, max-age=86400"}
        )

    async def handle_change(request: web.Request) -> web.Response:
        values = await body(request, change_fields)
        record = await one(request)
        principal = principal_of(request)
        if principal.role is not Role.ADMIN and record.user_id != principal.user_id:
            raise UserError(
                "only its owner or an admin may rename or move a file",
                status=403,
                code="FORBIDDEN",
            )
        folder = None if values["folder"] is None else names.folder_path(values["folder"])
        await appliance.library.rename(record, name=values["name"], folder=folder)
        changed = await file_rows.get(appliance.store, record.id)
        assert changed is not None
        return ok({"file": file_view(changed)})

    async def handle_delete(request: web.Request) -> web.Response:
        record = await one(request)
        current = appliance.jobs.current
        if current is not None and current.file_id == record.id:
            raise UserError(
                "the file is being printed; cancel the print first", status=409, code="CONFLICT"
            )
        await appliance.library.remove(record)
        return ok({"message": f"{record.original_name} deleted", "id": record.id})

    async def handle_print(request: web.Request) -> web.Response:
        record = await one(request)
        started = await start_print(appliance, record.id, principal_of(request))
        return ok({"job": job_view(started)}, status=201)

    file = {"type": "object", "required": ["file"], "properties": {"file": FILE_SCHEMA}}
    uploaded = (
        Answer(201, "Stored", file),
        Answer(409, "The same content is already in the library (`details.fileId`)"),
        Answer(413, "Larger than [files] max_upload_mb"),
        Answer(415, "Not a kind of file the library takes, or not what its name says"),
        Answer(507, "The appliance's storage is full"),
    )
    return [
        Endpoint("POST", "/api/files", handle_upload, "Upload a file", "files",
                 form=form_fields, answers=uploaded),
        Endpoint("POST", "/api/files/upload", handle_upload, "Upload a file (alias)", "files",
                 form=form_fields, answers=uploaded),
        Endpoint("GET", "/api/files", handle_list, "Files, filtered and sorted", "files",
                 query=list_fields,
                 answers=(Answer(200, "One page of files", {
                     "type": "object", "required": ["files"],
                     "properties": {"files": {"type": "array", "items": FILE_SCHEMA}},
                 }),)),
        Endpoint("GET", "/api/files/folders", handle_folders,
                 "The folders holding files this account sees ('' is the top)", "files",
                 answers=(Answer(200, "The folders", {
                     "type": "object", "required": ["folders"],
                     "properties": {"folders": {"type": "array", "items": {"type": "string"}}},
                 }),)),
        Endpoint("GET", "/api/files/{file_id}", handle_get,
                 "One file, its owner and its latest jobs", "files", path_fields=(_ID,),
                 answers=(Answer(200, "The file", file),)),
        Endpoint("GET", "/api/files/{file_id}/download", handle_download,
                 "The file's bytes (Range requests welcome)", "files", path_fields=(_ID,),
                 answers=(Answer(200, "The file", media="application/octet-stream"),
                          Answer(206, "Part of the file", media="application/octet-stream"),
                          Answer(416, "The range is outside the file",
                                 media="application/octet-stream"))),
        Endpoint("GET", "/api/files/{file_id}/thumbnail", handle_thumbnail,
                 "The picture the slicer embedded (the largest)", "files", path_fields=(_ID,),
                 answers=(Answer(200, "A PNG or JPEG image", media="image/png"),)),
        Endpoint("PATCH", "/api/files/{file_id}", handle_change,
                 "Rename a file or move it to another folder", "files", path_fields=(_ID,),
                 body=change_fields, answers=(Answer(200, "Changed", file),)),
        Endpoint("DELETE", "/api/files/{file_id}", handle_delete, "Delete a file", "files",
                 path_fields=(_ID,), answers=(Answer(200, "Deleted"),)),
        Endpoint("POST", "/api/files/{file_id}/print", handle_print, "Print this file", "files",
                 path_fields=(_ID,), answers=(Answer(201, "Started"),)),
    ]  # fmt: skip


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK_BYTES):
        yield chunk


async def _text(part: BodyPartReader) -> str:
    """A small text field of the form; 400 when it is not small or not UTF-8."""
    data = bytearray()
    while chunk := await part.read_chunk(FORM_TEXT_BYTES):
        data += chunk
        if len(data) > FORM_TEXT_BYTES:
            raise UserError(f"invalid request: {part.name} is too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"invalid request: {part.name} is not UTF-8 text") from None
