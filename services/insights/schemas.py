"""The insights API's response models."""

from pydantic import BaseModel, Field


class TableView(BaseModel):
    key: str
    title: str
    header: list[str]
    rows: list[list[str]] = Field(description="each row's label then its counts as shown "
                                  "(\"<10\" small, \"*\" withheld); the last row is the total")
    note: str = ""
    csv: str = Field(description="the address of this table as CSV")


class FigureView(BaseModel):
    label: str
    value: str


class PackView(BaseModel):
    district_id: str
    school_id: str | None
    month: str
    months: list[str]
    threshold: int = Field(description="counts under it are shown as \"<threshold\"")
    figures: list[FigureView]
    tables: list[TableView]
    missing: list[str] = Field(description="what the public events cannot tell")
    page: str
    pdf: str
