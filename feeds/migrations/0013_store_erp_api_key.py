from django.db import migrations, models


class Migration(migrations.Migration):
    """Issue 10: the store's ERP API key, kept as its SHA-256 only, and the first characters to tell keys apart."""

    dependencies = [
        ('feeds', '0012_prune_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='store',
            name='erp_api_key_hash',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='store',
            name='erp_api_key_hint',
            field=models.CharField(blank=True, max_length=12),
        ),
    ]
