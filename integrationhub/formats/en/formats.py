"""One date format on every page, Django's and django-q2's admin pages included (the en locale's own
formats would otherwise win over settings.DATETIME_FORMAT)."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
