from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("workers", "0003_worker_run_period"),
    ]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="session_pool",
            field=models.CharField(
                blank=True,
                db_index=True,
                help_text="Remote-lab session pool this worker serves; blank: none.",
                max_length=50,
            ),
        ),
    ]
